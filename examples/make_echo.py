"""Writes examples/models/echo4.onnx: y = x for x of shape [N, 4] (float32).

The rollout tests use it as a stable version next to the misbehaving test component, which
has the same signature (input `x`, output `y`, [N, 4] float32), echoes its input too, but
traps when the first value is -3: a "bad canary" that fails on part of the traffic.
"""

import pathlib

import onnx
from onnx import TensorProto, helper

x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "echo4", [x], [y])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="kiln-examples")
model.ir_version = 8
onnx.checker.check_model(model)
out = pathlib.Path(__file__).parent / "models" / "echo4.onnx"
onnx.save(model, out)
print(f"wrote {out}")
