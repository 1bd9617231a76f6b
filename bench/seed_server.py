#!/usr/bin/env python3
"""The seed's serving design, rebuilt for comparison: FastAPI + uvicorn + onnxruntime.

One model per process:

    python3 bench/seed_server.py --model examples/models/mlp.onnx --name mlp --port 8100

    POST /v1/models/{name}/predict
        {"features": [...], "model_version"?: str, "request_id"?: str}
     -> {"prediction", "confidence", "model_version", "request_id", "timestamp",
         "processing_time"}
    POST /v2/models/{name}/infer          (Open Inference Protocol v2, JSON)
        {"id"?: str, "inputs": [{"name", "shape", "datatype", "data": [...]}, ...]}
     -> {"model_name", "model_version", "id"?, "outputs": [{"name", "shape", "datatype", "data"}]}
    GET /health

The response has the shape of Kiln's seed API. A classifier predicts its label with the
top class probability as confidence (skl2onnx's ZipMap output, a list of {label: prob}
dicts, or a plain probability tensor, with or without a separate label output); a
regressor predicts its value with confidence null. The seed API only takes models with one
[N, F] input; the OIP endpoint takes any inputs (for the benchmark's CNN, [N, 1, 28, 28]).

How the seed ran is not recorded, so this follows the FastAPI deployment docs: uvicorn
with `--workers` = cores (2 here) and the `standard` extras (uvloop, httptools) when
installed; an `async def` endpoint that runs the session inline (for sub-millisecond
models a thread-pool hop costs more than it frees); onnxruntime limited to one intra-op
thread per worker so that workers do not oversubscribe the cores. All of these choices
favour the seed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
import uuid
from typing import Any, List, Optional

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

# uvicorn workers import this module afresh, so the model is passed through the environment.
ENV_MODEL = "SEED_MODEL_PATH"
ENV_NAME = "SEED_MODEL_NAME"
ENV_VERSION = "SEED_MODEL_VERSION"
ENV_THREADS = "SEED_ORT_THREADS"

ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}
# OIP v2 datatype names <-> numpy.
OIP_DTYPES = {
    "FP32": np.float32,
    "FP64": np.float64,
    "INT64": np.int64,
    "INT32": np.int32,
    "INT16": np.int16,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}
NP_OIP = {np.dtype(v): k for k, v in OIP_DTYPES.items()}


class PredictRequest(BaseModel):
    features: List[float]
    model_version: Optional[str] = None
    request_id: Optional[str] = None


# The seed had no OIP endpoint; this is its design extended the obvious way: the same
# FastAPI + pydantic request parsing and inline onnxruntime run, with the OIP v2 JSON body
# (the one Kiln's /v2/models/{name}/infer takes) in place of {"features": [...]}.
class InferInput(BaseModel):
    name: str
    shape: List[int]
    datatype: str
    data: List[Any]


class InferRequest(BaseModel):
    id: Optional[str] = None
    inputs: List[InferInput]


class Model:
    """An onnxruntime session plus what the predict endpoint needs to know about it."""

    def __init__(self, path: str, name: str, version: str, threads: int):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.name = name
        self.version = version
        inputs = self.session.get_inputs()
        self.input_names = {i.name for i in inputs}
        # The seed API (/v1 predict) needs one [N, F] input with a fixed F; other models are
        # served on the OIP endpoint only (width None).
        self.input_name = inputs[0].name
        self.width: Optional[int] = None
        self.dtype = ORT_DTYPES.get(inputs[0].type)
        if len(inputs) == 1 and len(inputs[0].shape) == 2 and isinstance(inputs[0].shape[1], int):
            if self.dtype is None:
                raise SystemExit(f"{path}: unsupported input {inputs[0].type} {inputs[0].shape}")
            self.width = inputs[0].shape[1]
        outputs = self.session.get_outputs()
        names = [o.name.lower() for o in outputs]
        self.output_names = [o.name for o in outputs]
        self.label_ix = next((i for i, n in enumerate(names) if "label" in n), None)
        self.prob_ix = next(
            (
                i
                for i, o in enumerate(outputs)
                if "prob" in o.name.lower() or o.type.startswith("seq(map")
            ),
            None,
        )
        self.classifier = self.label_ix is not None or self.prob_ix is not None

    def predict(self, features: List[float]) -> tuple[Any, Optional[float]]:
        x = np.asarray([features], dtype=self.dtype)
        outputs = self.session.run(None, {self.input_name: x})
        if not self.classifier:
            value = np.asarray(outputs[0]).reshape(-1)
            return (float(value[0]) if value.size == 1 else value.tolist()), None
        label: Any = None
        confidence: Optional[float] = None
        if self.prob_ix is not None:
            probs = outputs[self.prob_ix]
            if isinstance(probs, list):  # ZipMap: [{label: probability}, ...]
                row = probs[0]
                label, confidence = max(row.items(), key=lambda kv: kv[1])
            else:
                row = np.asarray(probs)[0]
                best = int(np.argmax(row))
                label, confidence = best, row[best]
        if self.label_ix is not None:
            label = np.asarray(outputs[self.label_ix]).reshape(-1)[0]
        return to_json(label), None if confidence is None else float(confidence)

    def infer(self, request: InferRequest) -> list[dict]:
        feeds = {}
        for t in request.inputs:
            if t.name not in self.input_names:
                raise ValueError(f"unknown input {t.name!r}")
            dtype = OIP_DTYPES.get(t.datatype)
            if dtype is None:
                raise ValueError(f"unsupported datatype {t.datatype!r}")
            feeds[t.name] = np.asarray(t.data, dtype=dtype).reshape(t.shape)
        outputs = self.session.run(None, feeds)
        answer = []
        for name, value in zip(self.output_names, outputs):
            value = np.asarray(value)
            answer.append(
                {
                    "name": name,
                    "shape": list(value.shape),
                    "datatype": NP_OIP.get(value.dtype, "BYTES"),
                    "data": value.reshape(-1).tolist(),
                }
            )
        return answer


def to_json(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def create_app() -> FastAPI:
    model = Model(
        os.environ[ENV_MODEL],
        os.environ[ENV_NAME],
        os.environ.get(ENV_VERSION, "1"),
        int(os.environ.get(ENV_THREADS, "1")),
    )
    app = FastAPI(title=f"seed server: {model.name}")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "healthy", "model": model.name, "model_version": model.version}

    @app.post("/v1/models/{name}/predict")
    async def predict(name: str, request: PredictRequest) -> dict:
        started = time.perf_counter()
        if name != model.name:
            raise HTTPException(status_code=404, detail=f"model {name!r} not found")
        if model.width is None:
            raise HTTPException(status_code=422, detail="the seed API needs a model with one [N, F] input")
        if len(request.features) != model.width:
            raise HTTPException(
                status_code=422,
                detail=f"expected {model.width} features, got {len(request.features)}",
            )
        try:
            prediction, confidence = model.predict(request.features)
        except Exception as e:  # the seed returned 500 with the error text
            raise HTTPException(status_code=500, detail=f"prediction failed: {e}") from e
        return {
            "prediction": prediction,
            "confidence": confidence,
            "model_version": request.model_version or model.version,
            "request_id": request.request_id or str(uuid.uuid4()),
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "processing_time": time.perf_counter() - started,
        }

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: InferRequest) -> dict:
        if name != model.name:
            raise HTTPException(status_code=404, detail=f"model {name!r} not found")
        try:
            outputs = model.infer(request)
        except ValueError as e:  # bad input name, datatype or shape
            raise HTTPException(status_code=400, detail=str(e)) from e
        except Exception as e:
            raise HTTPException(status_code=500, detail=f"inference failed: {e}") from e
        answer = {"model_name": model.name, "model_version": model.version, "outputs": outputs}
        if request.id is not None:
            answer["id"] = request.id
        return answer

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="path of the .onnx model")
    parser.add_argument("--name", required=True, help="model name in the URL")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="uvicorn worker processes (default 2: one per core of the benchmark machine; "
        "the seed's own count is unknown, FastAPI's docs advise one per core)",
    )
    parser.add_argument("--model-version", default="1")
    parser.add_argument("--ort-threads", type=int, default=1, help="onnxruntime intra-op threads per worker")
    args = parser.parse_args()

    os.environ[ENV_MODEL] = os.path.abspath(args.model)
    os.environ[ENV_NAME] = args.name
    os.environ[ENV_VERSION] = args.model_version
    os.environ[ENV_THREADS] = str(args.ort_threads)
    # Load once here so a bad model fails before uvicorn forks its workers.
    Model(args.model, args.name, args.model_version, args.ort_threads)

    import uvicorn

    # Run from bench/ so that the workers can import this module by name.
    os.chdir(os.path.dirname(os.path.abspath(__file__)))
    uvicorn.run(
        "seed_server:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
