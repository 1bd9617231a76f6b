#!/usr/bin/env python3
"""Builds Kiln's example models and their onnxruntime reference outputs.

For every example NAME this writes, into examples/models/:
  NAME.onnx           the model
  NAME.request.json   an Open Inference Protocol v2 infer request body (a batch of rows
                      from the test set): {"inputs": [{"name", "shape", "datatype", "data"}]}
  NAME.expected.json  onnxruntime's answer to exactly that request:
                      {"outputs": [{"name", "shape", "datatype", "data"}], "labels": [...]}
                      (outputs in graph order; "labels" are the class labels as strings,
                      only for classifiers)
and examples/models/invalid/unsupported_op.onnx, a model with an operator no engine knows.

Conventions:
  * `data` is the flat row-major list of values. JSON has no NaN: a `null` in the data of a
    float input means NaN (Kiln's loader maps null -> NaN for float inputs).
  * ZipMap outputs (a sequence of {label: probability} maps in onnxruntime) are written as
    a plain [N, n_classes] FP32 tensor in class-label order, which is what Kiln returns.
  * Opsets: sklearn models are converted with target_opset {'': 17, 'ai.onnx.ml': 3}
    (ai.onnx.ml 3 keeps the TreeEnsembleRegressor/Classifier operators instead of the
    opset-5 TreeEnsemble; opset 17 is within what tract tests). skl2onnx then declares the
    lowest versions its nodes need: ai.onnx 17 and ai.onnx.ml 1. The hand-built MLP and
    CNN use opset 17.
  * Some tree models are edited after conversion to reach code paths skl2onnx never
    emits (AVERAGE / MIN / MAX aggregation, every branch mode, partial leaf votes); their
    references still come from onnxruntime.
  * Deterministic: every random source has a fixed seed.

Run: python3 examples/make_examples.py   (needs onnx, numpy, scikit-learn, skl2onnx,
onnxruntime). It prints the operator types of every model.
"""

import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes, load_iris, make_classification
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge, SGDClassifier
from sklearn.model_selection import train_test_split
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import Binarizer, Normalizer, OneHotEncoder, StandardScaler
from sklearn.svm import LinearSVC

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "models")
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
ONNX_OPSET = 17
BATCH = 6

OIP_DATATYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int32): "INT32",
    np.dtype(np.bool_): "BOOL",
}


def oip_data(a):
    """Flat row-major list for JSON; NaN becomes null."""
    flat = a.reshape(-1)
    if flat.dtype.kind == "f":
        return [None if np.isnan(v) else float(v) for v in flat]
    if flat.dtype.kind == "b":
        return [bool(v) for v in flat]
    return [int(v) for v in flat]


def oip_tensor(name, a):
    a = np.asarray(a)
    return {
        "name": name,
        "shape": list(a.shape),
        "datatype": OIP_DATATYPES[a.dtype],
        "data": oip_data(a),
    }


def op_types(model):
    return sorted({(n.domain or "ai.onnx", n.op_type) for n in model.graph.node})


def zipmap_outputs(model):
    """Names of graph outputs produced by a ZipMap node."""
    return {o for n in model.graph.node if n.op_type == "ZipMap" for o in n.output}


def class_labels(model):
    for n in model.graph.node:
        for a in n.attribute:
            if a.name == "classlabels_int64s" and a.ints:
                return [str(i) for i in a.ints]
            if a.name == "classlabels_strings" and a.strings:
                return [s.decode() for s in a.strings]
    return None


def write_example(name, model, inputs):
    """Saves model, request and onnxruntime's expected answer; `inputs` is {name: array}."""
    onnx.checker.check_model(model)
    path = os.path.join(OUT, f"{name}.onnx")
    onnx.save(model, path)

    request = {"inputs": [oip_tensor(k, v) for k, v in inputs.items()]}
    with open(os.path.join(OUT, f"{name}.request.json"), "w") as f:
        json.dump(request, f)

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    results = sess.run(names, inputs)
    zipmaps = zipmap_outputs(model)
    labels = class_labels(model)
    outputs = []
    for out_name, value in zip(names, results):
        if out_name in zipmaps:
            # onnxruntime: a list of {label: probability}; Kiln: [N, n_classes] in label order.
            keys = list(value[0].keys())
            value = np.array([[row[k] for k in keys] for row in value], dtype=np.float32)
        outputs.append(oip_tensor(out_name, np.asarray(value)))
    expected = {"outputs": outputs}
    if labels is not None:
        expected["labels"] = labels
    with open(os.path.join(OUT, f"{name}.expected.json"), "w") as f:
        json.dump(expected, f)

    size = os.path.getsize(path)
    ops = ", ".join(f"{d}:{t}" for d, t in op_types(model))
    print(f"{name:32s} {size / 1024:8.1f} KiB  {ops}")


def convert(estimator, x, name, options=None):
    model = to_onnx(
        estimator,
        x[:1],
        target_opset=TARGET_OPSET,
        options=options,
        model_optim=True,
    )
    model.graph.name = name
    # skl2onnx lists opsets in set order (varies run to run) and sometimes twice: sort, dedupe.
    opsets = sorted({(o.domain, o.version) for o in model.opset_import})
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in opsets)
    for out in model.graph.output:
        t = out.type
        if t.HasField("sequence_type") or t.HasField("map_type"):
            producers = [n for n in model.graph.node if out.name in n.output]
            if not producers or producers[0].op_type != "ZipMap":
                sys.exit(f"{name}: output {out.name} is not a tensor; change converter options")
        elif t.tensor_type.elem_type == TensorProto.STRING:
            sys.exit(f"{name}: output {out.name} is a string tensor; use integer labels")
    return model


# ---------------------------------------------------------------------------------------
# Hand-built networks


def dense(rng, fan_in, fan_out):
    w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_in, fan_out)).astype(np.float32)
    b = rng.normal(0.0, 0.1, size=(fan_out,)).astype(np.float32)
    return w, b


def make_mlp():
    rng = np.random.default_rng(1)
    sizes = [10, 32, 16, 3]
    inits, nodes = [], []
    prev = "input"
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        w, bias = dense(rng, a, b)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(bias, f"b{i}")]
        last = i == len(sizes) - 2
        if i == 0:
            # First layer as MatMul + Add, the others as Gemm: both patterns appear in the wild.
            nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"mm{i}"], name=f"matmul{i}"))
            nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"], name=f"add{i}"))
        else:
            out = "logits" if last else f"z{i}"
            nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out], name=f"gemm{i}"))
        if not last:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [f"h{i}"], name=f"relu{i}"))
            prev = f"h{i}"
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1, name="softmax"))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 10])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    model.ir_version = 8
    x = rng.normal(size=(BATCH, 10)).astype(np.float32)
    write_example("mlp", model, {"input": x})


def make_cnn():
    rng = np.random.default_rng(2)

    def conv_w(cout, cin, k):
        return rng.normal(0.0, np.sqrt(2.0 / (cin * k * k)), size=(cout, cin, k, k)).astype(np.float32)

    inits = [
        numpy_helper.from_array(conv_w(8, 1, 3), "conv1_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "conv1_b"),
        numpy_helper.from_array(conv_w(16, 8, 3), "conv2_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, 16).astype(np.float32), "conv2_b"),
        numpy_helper.from_array(rng.normal(0, 0.35, (10, 16)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, 10).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "conv1_w", "conv1_b"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Conv", ["p1", "conv2_w", "conv2_b"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    model.ir_version = 8
    x = rng.uniform(0.0, 1.0, size=(4, 1, 28, 28)).astype(np.float32)
    write_example("cnn", model, {"image": x})


# ---------------------------------------------------------------------------------------
# scikit-learn models


def house_prices(n, rng):
    """Synthetic house prices: sqft, bedrooms, bathrooms, age, lot size, garage, distance to
    centre, school score, floors, renovated."""
    sqft = rng.normal(1800, 600, n).clip(400, 6000)
    bedrooms = rng.integers(1, 6, n).astype(float)
    bathrooms = (bedrooms / 2 + rng.integers(0, 3, n) * 0.5).clip(1, 5)
    age = rng.uniform(0, 100, n)
    lot = rng.lognormal(8.5, 0.5, n)
    garage = rng.integers(0, 4, n).astype(float)
    distance = rng.exponential(10, n)
    school = rng.uniform(1, 10, n)
    floors = rng.integers(1, 4, n).astype(float)
    renovated = (rng.uniform(0, 1, n) < 0.3).astype(float)
    x = np.column_stack([sqft, bedrooms, bathrooms, age, lot, garage, distance, school, floors, renovated])
    price = (
        50_000
        + 150 * sqft
        + 10_000 * bedrooms
        + 15_000 * bathrooms
        - 800 * age
        + 3 * lot
        + 12_000 * garage
        - 4_000 * distance
        + 20_000 * school
        + 25_000 * renovated
        + rng.normal(0, 25_000, n)
    )
    return x.astype(np.float32), price


def make_house_price_forest():
    rng = np.random.default_rng(3)
    x, y = house_prices(1500, rng)
    xtr, xte, ytr, _ = train_test_split(x, y, test_size=0.2, random_state=0)
    model = RandomForestRegressor(n_estimators=50, max_depth=10, min_samples_leaf=4, random_state=0)
    model.fit(xtr, ytr)
    onx = convert(model, xtr, "house_price_forest")
    write_example("house_price_forest", onx, {"X": xte[:BATCH]})


def make_iris_logreg():
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    xtr, xte, ytr, _ = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    model = LogisticRegression(max_iter=1000)
    model.fit(xtr, ytr)
    onx = convert(model, xtr, "iris_logreg", options={id(model): {"zipmap": False}})
    write_example("iris_logreg", onx, {"X": xte[:BATCH]})


def make_gbm_classifier():
    x, y = make_classification(
        n_samples=600, n_features=8, n_informative=5, n_classes=3, random_state=4
    )
    x = x.astype(np.float32)
    xtr, xte, ytr, _ = train_test_split(x, y, test_size=0.2, random_state=0)
    model = GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0)
    model.fit(xtr, ytr)
    onx = convert(model, xtr, "gbm_classifier")  # ZipMap stays on
    write_example("gbm_classifier", onx, {"X": xte[:BATCH]})


def make_ops_gbm_binary():
    """Binary gradient boosting: one score column, LOGISTIC, tract's binary layout."""
    x, y = make_classification(n_samples=400, n_features=5, n_informative=3, random_state=12)
    x = x.astype(np.float32)
    xtr, xte, ytr, _ = train_test_split(x, y, test_size=0.2, random_state=0)
    model = GradientBoostingClassifier(n_estimators=15, max_depth=2, random_state=0)
    model.fit(xtr, ytr)
    onx = convert(model, xtr, "ops_gbm_binary", options={id(model): {"zipmap": False}})
    write_example("ops_gbm_binary", onx, {"X": xte[:BATCH]})


def make_ops_forest_binary():
    """Binary random forest: one voted class, probabilities as scores (threshold 0.5)."""
    x, y = make_classification(n_samples=400, n_features=5, n_informative=3, random_state=13)
    x = x.astype(np.float32)
    xtr, xte, ytr, _ = train_test_split(x, y, test_size=0.2, random_state=0)
    model = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0)
    model.fit(xtr, ytr)
    onx = convert(model, xtr, "ops_forest_binary", options={id(model): {"zipmap": False}})
    # Four rows of each predicted class, so both labels appear.
    predicted = model.predict(xte)
    rows = np.concatenate([np.flatnonzero(predicted == 0)[:4], np.flatnonzero(predicted == 1)[:4]])
    write_example("ops_forest_binary", onx, {"X": xte[np.sort(rows)]})


def make_scaler_pipeline():
    x, y = load_diabetes(return_X_y=True)
    x = x.astype(np.float32)
    xtr, xte, ytr, _ = train_test_split(x, y, test_size=0.2, random_state=0)
    model = Pipeline([("scale", StandardScaler()), ("ridge", Ridge(alpha=1.0))])
    model.fit(xtr, ytr)
    onx = convert(model, xtr, "scaler_pipeline")
    write_example("scaler_pipeline", onx, {"X": xte[:BATCH]})


def make_ops_binarizer_normalizer():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = (x[:, 0] > 0.2).astype(int) + (x[:, 1] + x[:, 2] > 0.5).astype(int)
    xtr, xte, ytr, _ = train_test_split(x, y, test_size=0.2, random_state=0)
    model = Pipeline(
        [
            ("features", FeatureUnion([("bin", Binarizer(threshold=0.3)), ("norm", Normalizer(norm="l2"))])),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    )
    model.fit(xtr, ytr)
    onx = convert(model, xtr, "ops_binarizer_normalizer", options={id(model): {"zipmap": False}})
    write_example("ops_binarizer_normalizer", onx, {"X": xte[:BATCH]})


def make_ops_imputer():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    y = x @ np.array([1.5, -2.0, 0.5, 3.0, -1.0]) + rng.normal(0, 0.1, 300)
    x[rng.uniform(size=x.shape) < 0.1] = np.nan
    xtr, xte, ytr, _ = train_test_split(x, y, test_size=0.2, random_state=0)
    model = Pipeline([("impute", SimpleImputer(strategy="mean")), ("lin", LinearRegression())])
    model.fit(xtr, ytr)
    onx = convert(model, xtr, "ops_imputer")
    batch = xte[:BATCH].copy()
    # Make sure the request holds NaNs in several columns.
    batch[0, 1] = np.nan
    batch[2, 3] = np.nan
    batch[4, 0] = np.nan
    batch[4, 4] = np.nan
    write_example("ops_imputer", onx, {"X": batch})


def make_ops_onehot():
    rng = np.random.default_rng(7)
    n = 500
    x = np.column_stack([rng.integers(0, 4, n), rng.integers(10, 13, n), rng.integers(0, 2, n)]).astype(np.int64)
    y = ((x[:, 0] == 2) | ((x[:, 1] == 11) & (x[:, 2] == 1))).astype(int) + (x[:, 0] == 3).astype(int)
    xtr, xte, ytr, _ = train_test_split(x, y, test_size=0.2, random_state=0)
    model = Pipeline(
        [
            ("onehot", OneHotEncoder(handle_unknown="ignore")),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    )
    model.fit(xtr, ytr)
    onx = convert(model, xtr, "ops_onehot", options={id(model): {"zipmap": False}})
    batch = xte[:BATCH].copy()
    batch[1, 1] = 99  # an unknown category: all zeros for that column
    write_example("ops_onehot", onx, {"X": batch})


def make_ops_array_feature_extractor():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    y = x[:, 0] * 2 - x[:, 2] + 0.5 * x[:, 5] + rng.normal(0, 0.1, 300)
    xtr, xte, ytr, _ = train_test_split(x, y, test_size=0.2, random_state=0)
    model = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [("scaled", StandardScaler(), [0, 2]), ("raw", "passthrough", [5, 3])],
                    remainder="drop",
                ),
            ),
            ("lin", LinearRegression()),
        ]
    )
    model.fit(xtr, ytr)
    onx = convert(model, xtr, "ops_array_feature_extractor")
    write_example("ops_array_feature_extractor", onx, {"X": xte[:BATCH]})


def tree_attr(node, name):
    return next((a for a in node.attribute if a.name == name), None)


def set_tree_attr(node, name, value):
    old = tree_attr(node, name)
    if old is not None:
        node.attribute.remove(old)
    node.attribute.append(helper.make_attribute(name, value))


def fix_output_width(model, width):
    """skl2onnx declares [N, 1] for multi-target tree regressors; declare [N, width]."""
    dims = model.graph.output[0].type.tensor_type.shape.dim
    dims[1].dim_value = width


def mix_branch_modes(node):
    """Rewrites BRANCH_LEQ nodes (x <= v goes to the true child), in turn, to equivalent
    nodes of the other modes: BRANCH_GT v with the children swapped, BRANCH_LT / BRANCH_GTE
    on the next float above v (children swapped for GTE). The trees compute exactly what
    they computed before; only the comparisons differ."""
    modes = [m.decode() for m in tree_attr(node, "nodes_modes").strings]
    values = np.array(tree_attr(node, "nodes_values").floats, dtype=np.float32)
    true_ids = list(tree_attr(node, "nodes_truenodeids").ints)
    false_ids = list(tree_attr(node, "nodes_falsenodeids").ints)
    branch = 0
    for i, mode in enumerate(modes):
        if mode != "BRANCH_LEQ":
            continue
        kind = branch % 4
        branch += 1
        up = np.nextafter(values[i], np.float32(np.inf), dtype=np.float32)
        if kind == 1:
            modes[i] = "BRANCH_GT"
            true_ids[i], false_ids[i] = false_ids[i], true_ids[i]
        elif kind == 2:
            modes[i] = "BRANCH_LT"
            values[i] = up
        elif kind == 3:
            modes[i] = "BRANCH_GTE"
            values[i] = up
            true_ids[i], false_ids[i] = false_ids[i], true_ids[i]
    set_tree_attr(node, "nodes_modes", modes)
    set_tree_attr(node, "nodes_values", values.tolist())
    set_tree_attr(node, "nodes_truenodeids", true_ids)
    set_tree_attr(node, "nodes_falsenodeids", false_ids)


def make_ops_tree_regressor_avg():
    """Two-target extra-trees forest rewritten to aggregate_function AVERAGE, with
    base_values and every branch mode.

    skl2onnx writes forests as SUM of weights pre-divided by the tree count; scaling the
    weights back and asking for AVERAGE gives the same model through the other code path.
    """
    rng = np.random.default_rng(9)
    x = rng.uniform(-2, 2, size=(400, 4)).astype(np.float32)
    y = np.column_stack([np.sin(x[:, 0]) + x[:, 1], x[:, 2] * x[:, 3]])
    xtr, xte, ytr, _ = train_test_split(x, y, test_size=0.2, random_state=0)
    model = ExtraTreesRegressor(n_estimators=8, max_depth=5, random_state=0)
    model.fit(xtr, ytr)
    onx = convert(model, xtr, "ops_tree_regressor_avg")
    fix_output_width(onx, 2)
    node = onx.graph.node[0]
    weights = np.array(tree_attr(node, "target_weights").floats, dtype=np.float32)
    set_tree_attr(node, "target_weights", (weights * model.n_estimators).tolist())
    set_tree_attr(node, "aggregate_function", "AVERAGE")
    set_tree_attr(node, "base_values", [0.5, -1.0])
    mix_branch_modes(node)
    write_example("ops_tree_regressor_avg", onx, {"X": xte[:BATCH]})
    return onx, xte


def make_ops_tree_regressor_minmax(avg_model, xte):
    """The same trees with aggregate_function MAX; and with MIN and a third target for
    which only some leaves of the first tree vote: onnxruntime gives a target that no
    reached leaf votes for 0, without its base value."""
    onx = onnx.ModelProto()
    onx.CopyFrom(avg_model)
    onx.graph.name = "ops_tree_regressor_max"
    set_tree_attr(onx.graph.node[0], "aggregate_function", "MAX")
    write_example("ops_tree_regressor_max", onx, {"X": xte[:BATCH]})

    onx = onnx.ModelProto()
    onx.CopyFrom(avg_model)
    onx.graph.name = "ops_tree_regressor_min"
    node = onx.graph.node[0]
    set_tree_attr(node, "aggregate_function", "MIN")
    set_tree_attr(node, "n_targets", 3)
    set_tree_attr(node, "base_values", [0.5, -1.0, 2.0])
    ids = list(tree_attr(node, "target_ids").ints)
    node_ids = list(tree_attr(node, "target_nodeids").ints)
    tree_ids = list(tree_attr(node, "target_treeids").ints)
    weights = list(tree_attr(node, "target_weights").floats)
    first_tree_leaves = sorted({n for n, t in zip(node_ids, tree_ids) if t == 0})
    for k, leaf in enumerate(first_tree_leaves[::2]):
        ids.append(2)
        node_ids.append(leaf)
        tree_ids.append(0)
        weights.append(0.25 * k - 1.0)
    set_tree_attr(node, "target_ids", ids)
    set_tree_attr(node, "target_nodeids", node_ids)
    set_tree_attr(node, "target_treeids", tree_ids)
    set_tree_attr(node, "target_weights", weights)
    fix_output_width(onx, 3)
    write_example("ops_tree_regressor_min", onx, {"X": xte[:BATCH]})


def make_ops_tree_regressor_gbr():
    """Gradient boosting: TreeEnsembleRegressor, SUM, base_values."""
    rng = np.random.default_rng(10)
    x = rng.uniform(-2, 2, size=(400, 4)).astype(np.float32)
    y = 10 + np.sin(x[:, 0]) * 3 + x[:, 1] ** 2
    xtr, xte, ytr, _ = train_test_split(x, y, test_size=0.2, random_state=0)
    model = GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0)
    model.fit(xtr, ytr)
    onx = convert(model, xtr, "ops_tree_regressor_gbr")
    write_example("ops_tree_regressor_gbr", onx, {"X": xte[:BATCH]})


def make_ops_linear_svc():
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    xtr, xte, ytr, _ = train_test_split(x, y, test_size=0.3, random_state=1, stratify=y)
    model = LinearSVC(random_state=0, max_iter=5000)
    model.fit(xtr, ytr)
    onx = convert(model, xtr, "ops_linear_svc")
    write_example("ops_linear_svc", onx, {"X": xte[:BATCH]})


def make_ops_sgd_binary():
    """Binary linear classifier with probabilities (logistic loss)."""
    x, y = make_classification(n_samples=400, n_features=6, random_state=11)
    x = x.astype(np.float32)
    xtr, xte, ytr, _ = train_test_split(x, y, test_size=0.2, random_state=0)
    model = SGDClassifier(loss="log_loss", random_state=0)
    model.fit(xtr, ytr)
    onx = convert(model, xtr, "ops_sgd_binary", options={id(model): {"zipmap": False}})
    write_example("ops_sgd_binary", onx, {"X": xte[:BATCH]})


def make_unsupported_op():
    node = helper.make_node("FancyOp", ["x"], ["y"], domain="com.example.kiln", name="fancy_node")
    graph = helper.make_graph(
        [node],
        "unsupported_op",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET), helper.make_opsetid("com.example.kiln", 1)],
    )
    model.ir_version = 8
    os.makedirs(os.path.join(OUT, "invalid"), exist_ok=True)
    onnx.save(model, os.path.join(OUT, "invalid", "unsupported_op.onnx"))
    print(f"{'invalid/unsupported_op':32s} com.example.kiln:FancyOp")


def main():
    os.makedirs(OUT, exist_ok=True)
    np.random.seed(0)
    make_mlp()
    make_cnn()
    make_house_price_forest()
    make_iris_logreg()
    make_gbm_classifier()
    make_ops_gbm_binary()
    make_ops_forest_binary()
    make_scaler_pipeline()
    make_ops_binarizer_normalizer()
    make_ops_imputer()
    make_ops_onehot()
    make_ops_array_feature_extractor()
    avg_model, avg_x = make_ops_tree_regressor_avg()
    make_ops_tree_regressor_minmax(avg_model, avg_x)
    make_ops_tree_regressor_gbr()
    make_ops_linear_svc()
    make_ops_sgd_binary()
    make_unsupported_op()


if __name__ == "__main__":
    main()
