"""Writes the echo models used by the rollout tests and the README's fleet tour:

- examples/models/echo4.onnx: y = x for x of shape [N, 4] (float32);
- examples/models/echo4_double.onnx: y = 2x, answers that disagree with echo4.onnx;
- examples/models/echo4_faulty.onnx: the same answers as echo4.onnx, except that a row whose first value
  is negative makes the model fail (a Gather with an out-of-range index): a "bad release"
  that fails on part of the traffic and passes a smoke test with positive inputs.
"""

import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = pathlib.Path(__file__).parent / "models"


def save(graph, name):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="kiln-examples")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, OUT / name)
    print(f"wrote {OUT / name}")


x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
save(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "echo4", [x], [y]), "echo4.onnx")

# index = int64(relu(-x[:, 0]) * 1000): 0 for rows with x[0] >= 0, out of range otherwise.
consts = [
    numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
    numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
    numpy_helper.from_array(np.array([1000.0], dtype=np.float32), "scale"),
    numpy_helper.from_array(np.zeros((1, 4), dtype=np.float32), "table"),
]
nodes = [
    helper.make_node("Slice", ["x", "zero", "one", "one"], ["first"]),  # [N, 1]
    helper.make_node("Neg", ["first"], ["neg"]),
    helper.make_node("Relu", ["neg"], ["pos"]),
    helper.make_node("Mul", ["pos", "scale"], ["scaled"]),
    helper.make_node("Cast", ["scaled"], ["idx2"], to=TensorProto.INT64),
    helper.make_node("Squeeze", ["idx2", "one"], ["idx"]),  # [N]
    helper.make_node("Gather", ["table", "idx"], ["zeros"], axis=0),  # [N, 4]
    helper.make_node("Add", ["x", "zeros"], ["y"]),
]
save(helper.make_graph(nodes, "echo4_faulty", [x], [y], initializer=consts), "echo4_faulty.onnx")

# y = 2x: a release whose answers differ from echo4's on every row (shadow disagreement).
two = numpy_helper.from_array(np.array([2.0], dtype=np.float32), "two")
save(
    helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])], "echo4_double", [x], [y], initializer=[two]),
    "echo4_double.onnx",
)

# Requests and onnxruntime's answers, like every other example (NAME.request.json,
# NAME.expected.json), so the conformance suites check them too. The rows have positive
# first values: the faulty model answers those.
import json  # noqa: E402

import onnxruntime as ort  # noqa: E402

rows = np.array([[1.0, 2.0, 3.0, 4.0], [5.5, -1.0, 0.25, 8.0], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)


def tensor(name, value):
    return {"name": name, "shape": list(value.shape), "datatype": "FP32", "data": [float(v) for v in value.ravel()]}


for name in ("echo4", "echo4_double", "echo4_faulty"):
    session = ort.InferenceSession(str(OUT / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    (y_value,) = session.run(["y"], {"x": rows})
    (OUT / f"{name}.request.json").write_text(json.dumps({"inputs": [tensor("x", rows)]}))
    (OUT / f"{name}.expected.json").write_text(json.dumps({"outputs": [tensor("y", y_value)]}))
