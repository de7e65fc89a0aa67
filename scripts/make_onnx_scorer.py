#!/usr/bin/env python3
"""Write a small ONNX reward model: r(x) = -1/2 x^T diag(a) x + b^T x + c on rows x of length d.

Used by the ONNX tests (tests/onnx.rs) and as an example of a black-box scorer for `reward: { kind: onnx, ... }`.
Usage: make_onnx_scorer.py OUT.onnx --a 0.02 2.0 --b 0 0 --c 0
Needs the `onnx` package (`.venv/bin/pip install onnx`).
"""
import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--a", type=float, nargs="+", required=True, help="diagonal of A")
p.add_argument("--b", type=float, nargs="+", required=True)
p.add_argument("--c", type=float, default=0.0)
args = p.parse_args()
d = len(args.a)
assert len(args.b) == d, "a and b must have the same length"

w_sq = numpy_helper.from_array(np.array(args.a, dtype=np.float32).reshape(d, 1) * -0.5, "w_sq")
w_lin = numpy_helper.from_array(np.array(args.b, dtype=np.float32).reshape(d, 1), "w_lin")
c = numpy_helper.from_array(np.array([args.c], dtype=np.float32), "c")
shape = numpy_helper.from_array(np.array([-1], dtype=np.int64), "shape")
nodes = [
    helper.make_node("Mul", ["x", "x"], ["x2"]),
    helper.make_node("MatMul", ["x2", "w_sq"], ["q"]),
    helper.make_node("MatMul", ["x", "w_lin"], ["l"]),
    helper.make_node("Add", ["q", "l"], ["ql"]),
    helper.make_node("Add", ["ql", "c"], ["r2"]),
    helper.make_node("Reshape", ["r2", "shape"], ["reward"]),
]
graph = helper.make_graph(
    nodes,
    "quadratic_reward",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", d])],
    [helper.make_tensor_value_info("reward", TensorProto.FLOAT, ["n"])],
    initializer=[w_sq, w_lin, c, shape],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, args.out)
print(args.out)
