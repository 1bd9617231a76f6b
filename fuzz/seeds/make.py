#!/usr/bin/env python3
"""Writes the starting corpus of each fuzz target (fuzz/corpus/<target>/seed-*) from
Kiln's real inputs: the example requests, the documented kiln.toml, routing tables like the
sync service pushes, an ONNX model saved with external data, and the section layout of a
real compiled component. `cargo fuzz cmin` then keeps what adds coverage.

Usage, from the repository root: python3 fuzz/seeds/make.py [component.wasm]
(the component defaults to the newest one under target/kiln-test-cache/components/).
"""
import glob
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
MODELS = os.path.join(ROOT, "examples", "models")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, f"seed-{name}"), "wb") as f:
        f.write(data)


def example_request(name, rows=None):
    with open(os.path.join(MODELS, f"{name}.request.json")) as f:
        req = json.load(f)
    if rows is not None:
        for i in req["inputs"]:
            per_row = len(i["data"]) // i["shape"][0]
            i["shape"][0] = rows
            i["data"] = i["data"][: rows * per_row]
    return req


# --- seed: byte 0 = model (0 iris, 1 onehot, 2 cnn, 3 unknown) | headers << 2 ---------
iris = example_request("iris_logreg")["inputs"][0]
iris_rows = [iris["data"][i : i + 4] for i in range(0, len(iris["data"]), 4)]
onehot = example_request("ops_onehot")["inputs"][0]
onehot_rows = [onehot["data"][i : i + 3] for i in range(0, len(onehot["data"]), 3)]
seed_bodies = [
    (0, "iris-row", {"features": iris_rows[0]}),
    (0, "iris-rows", {"instances": iris_rows, "request_id": "r-1"}),
    (0, "iris-version", {"features": iris_rows[1], "model_version": "champion"}),
    (0, "iris-version-number", {"features": iris_rows[1], "model_version": 3}),
    (1, "onehot-row", {"features": onehot_rows[0]}),
    (2, "cnn-row", {"features": [0.0] * 8}),
    (0, "iris-bad-row", {"instances": [iris_rows[0], "x"]}),
    (0, "iris-both", {"features": [1], "instances": [[1]]}),
]
for model, name, body in seed_bodies:
    write("seed", name, bytes([model]) + json.dumps(body).encode())
write("seed", "iris-forced", bytes([0 | (4 << 2)]) + json.dumps({"features": iris_rows[2]}).encode())
write("seed", "iris-key", bytes([0 | (8 << 2)]) + json.dumps({"instances": iris_rows[:2]}).encode())

# --- oip: byte 0 = model | path version << 2 | binary 0x20 | forced 0x40 | key 0x80 ----
def binary(model, req, mode_extra=0):
    header = {"inputs": [], "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}
    raw = b""
    for i in req["inputs"]:
        fmt = {"FP32": "<f", "INT64": "<q"}[i["datatype"]]
        data = b"".join(struct.pack(fmt, v) for v in i["data"])
        header["inputs"].append({"name": i["name"], "shape": i["shape"], "datatype": i["datatype"],
                                 "parameters": {"binary_data_size": len(data)}})
        raw += data
    js = json.dumps(header).encode()
    return bytes([model | 0x20 | mode_extra]) + struct.pack("<H", len(js)) + js + raw

write("oip", "iris", b"\x00" + json.dumps(example_request("iris_logreg")).encode())
write("oip", "iris-outputs", b"\x00" + json.dumps({**example_request("iris_logreg", 2), "id": "a",
      "outputs": [{"name": "label"}], "parameters": {"binary_data_output": True}}).encode())
write("oip", "iris-version-path", bytes([0 | (1 << 2)]) + json.dumps(example_request("iris_logreg", 1)).encode())
write("oip", "iris-restricted", bytes([0 | (3 << 2)]) + json.dumps(example_request("ops_onehot", 1)).encode())
write("oip", "onehot", b"\x01" + json.dumps(example_request("ops_onehot")).encode())
write("oip", "cnn", b"\x02" + json.dumps(example_request("cnn", 1)).encode())
write("oip", "iris-binary", binary(0, example_request("iris_logreg", 2)))
write("oip", "onehot-binary", binary(1, example_request("ops_onehot", 2), 0x80))
write("oip", "cnn-binary", binary(2, example_request("cnn", 1), 0x40))

# --- routing_table: the JSON a node's admin push takes, and the compact edge form ------
digest = lambda n: format(n, "064x")
tables = {
    "canary": {"generation": 3, "models": {"iris": {"versions": [
        {"version": 1, "digest": digest(1), "weight": 90, "stage": "Production", "aliases": [], "open": True},
        {"version": 2, "digest": digest(2), "weight": 10, "stage": "None", "aliases": ["champion"], "open": True}],
        "shadow": {"version": 3, "digest": digest(3), "weight": 0}}},
        "readers": [{"name": "viewer", "token_sha256": digest(9), "models": ["ir*", "h?use"]}]},
    "empty": {"generation": 0, "models": {}},
    "zero-weights": {"generation": 1, "models": {"m": {"versions": [{"version": 1, "digest": digest(1), "weight": 0}]}}},
}
for name, t in tables.items():
    write("routing_table", name, json.dumps(t))
write("routing_table", "compact", "forest=3:90,4:10;mlp=1")

# --- kiln_toml: the documented example --------------------------------------------------
with open(os.path.join(ROOT, "examples", "kiln.toml")) as f:
    write("kiln_toml", "example", f.read())
write("kiln_toml", "weights", '[models.iris]\nweights = { "3" = 90, "4" = 10 }\nshadow = 5\nnodes = ["a", "b"]\n')

# --- onnx_external: byte 0 = length of weights.bin; the rest is the model ---------------
try:
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("W", TensorProto.FLOAT, [3, 4], [float(i) for i in range(12)])
    c = helper.make_tensor("C", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    node = helper.make_node("Constant", [], ["c"], value=c)
    mm = helper.make_node("MatMul", ["x", "W"], ["y0"])
    add = helper.make_node("Add", ["y0", "c"], ["y"])
    graph = helper.make_graph([node, mm, add], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], [w])
    model = helper.make_model(graph)
    # What onnx's save_as_external_data writes, with both tensors in one 64-byte file
    # (make_model copied the graph: edit the model's).
    g = model.graph
    for t, offset in ((g.initializer[0], 0), (g.node[0].attribute[0].t, 48)):
        length = len(t.float_data) * 4
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", "weights.bin"), ("offset", str(offset)), ("length", str(length))):
            e = t.external_data.add()
            e.key, e.value = k, v
    write("onnx_external", "external", bytes([64]) + model.SerializeToString())
except ImportError:
    print("onnx (python) is not installed: no external-data seed", file=sys.stderr)
for name in ("echo4", "iris_logreg"):
    with open(os.path.join(MODELS, f"{name}.onnx"), "rb") as f:
        write("onnx_external", name, b"\x00" + f.read())

# --- wasm_section: a real component's section layout with its kiln-bundle section -------
def leb(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v == 0:
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def read_leb(b, p):
    v = s = 0
    while True:
        x = b[p]
        p += 1
        v |= (x & 0x7F) << s
        s += 7
        if x < 0x80:
            return v, p


def skeleton(component):
    """Every top-level section kept with its id (custom sections with their name), bodies
    emptied except the kiln-bundle section's."""
    out = bytearray(component[:8])
    p = 8
    while p < len(component):
        sid = component[p]
        n, p = read_leb(component, p + 1)
        body = component[p : p + n]
        if sid == 0:
            ln, q = read_leb(body, 0)
            if body[q : q + ln] != b"kiln-bundle":
                body = body[: q + ln]
        else:
            body = b""
        out += bytes([sid]) + leb(len(body)) + body
        p += n
    return bytes(out)


components = sys.argv[1:] or sorted(glob.glob(os.path.join(ROOT, "target", "kiln-test-cache", "components", "*.wasm")),
                                    key=os.path.getsize)[:1]
for path in components:
    with open(path, "rb") as f:
        write("wasm_section", "component-layout", skeleton(f.read()))
write("wasm_section", "no-bundle", b"\0asm\x0d\x00\x01\x00" + b"\x00\x05\x04name")
