"""Drives a Kiln server with Triton's own HTTP client (tritonclient[http], unmodified) and
prints what it saw as JSON, for tests/tests/scenarios/serve_tritonclient.rs to check against the
onnxruntime references.

usage: triton_client_check.py HOST:PORT MODEL REQUEST.json
"""

import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype


def main():
    url, model, request_path = sys.argv[1:4]
    with open(request_path) as f:
        request = json.load(f)
    client = httpclient.InferenceServerClient(url)
    out = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "unknown_model_ready": client.is_model_ready("no-such-model"),
        "server_metadata": client.get_server_metadata(),
        "metadata": client.get_model_metadata(model),
        "config": client.get_model_config(model),
    }
    output_names = [o["name"] for o in out["metadata"]["outputs"]]

    def inputs(binary):
        result = []
        for spec in request["inputs"]:
            array = np.array(spec["data"], dtype=triton_to_np_dtype(spec["datatype"])).reshape(spec["shape"])
            tensor = httpclient.InferInput(spec["name"], list(array.shape), spec["datatype"])
            tensor.set_data_from_numpy(array, binary_data=binary)
            result.append(tensor)
        return result

    def collect(result, names):
        return {
            n: {"shape": list(result.as_numpy(n).shape), "data": result.as_numpy(n).astype(float).ravel().tolist()}
            for n in names
        }

    # Binary inputs and outputs (the client's default), JSON inputs and outputs, and
    # no outputs listed at all (the client then asks for binary outputs).
    for mode, binary in (("binary", True), ("json", False)):
        requested = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in output_names]
        result = client.infer(model, inputs(binary), outputs=requested, request_id=f"req-{mode}")
        out[mode] = collect(result, output_names)
        out[mode + "_id"] = result.get_response().get("id")
    out["default"] = collect(client.infer(model, inputs(True)), output_names)
    first = output_names[0]
    only_first = client.infer(model, inputs(True), outputs=[httpclient.InferRequestedOutput(first)])
    out["subset"] = [o["name"] for o in only_first.get_response()["outputs"]]

    def bad_input():
        spec = request["inputs"][0]
        array = np.zeros((1, 1), dtype=triton_to_np_dtype(spec["datatype"]))
        tensor = httpclient.InferInput(spec["name"], [1, 1], spec["datatype"])
        tensor.set_data_from_numpy(array)
        return tensor

    for key, call in (
        ("unknown_model_error", lambda: client.infer("no-such-model", inputs(True))),
        ("bad_shape_error", lambda: client.infer(model, [bad_input()])),
    ):
        try:
            call()
            out[key] = None
        except InferenceServerException as e:
            out[key] = e.message()

    print(json.dumps(out))


if __name__ == "__main__":
    main()
