"""ONNX import (``shiftpool.sw.train.onnx_import``): models built with onnx's helper API
become float models whose outputs agree with onnxruntime's; every unsupported node
and every bad file is one error naming it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from shiftpool.sw.train.onnx_import import (
    OnnxImportError,
    compare_with_onnxruntime,
    import_onnx,
)


def _save(tmp_path, nodes, inits, in_shape, out_shape, name="m.onnx"):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / name
    onnx.save(model, path)
    return path


def _cnn(tmp_path, rng, softmax=False):
    inits = {
        "w1": rng.normal(0, 0.5, (4, 2, 3, 3)), "b1": rng.normal(0, 0.1, 4),
        "g": rng.uniform(0.5, 1.5, 4), "beta": rng.normal(0, 0.1, 4),
        "mu": rng.normal(0, 0.1, 4), "var": rng.uniform(0.5, 2, 4),
        "w2": rng.normal(0, 0.3, (5, 4 * 3 * 3)), "b2": rng.normal(0, 0.1, 5),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("BatchNormalization", ["c", "g", "beta", "mu", "var"], ["n"],
                         epsilon=1e-3, name="bn1"),
        helper.make_node("Relu", ["n"], ["r"], name="relu1"),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2],
                         name="pool1"),
        helper.make_node("Flatten", ["p"], ["f"], axis=1, name="flat"),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], transB=1, name="fc"),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["y"], ["s"], axis=1, name="sm"))
    return _save(tmp_path, nodes, inits, ["N", 2, 7, 6], ["N", 5])


@pytest.mark.parametrize("softmax", [False, True])
def test_cnn_with_batchnorm_agrees_with_onnxruntime(tmp_path, softmax):
    rng = np.random.default_rng(0)
    path = _cnn(tmp_path, rng, softmax)
    model, notes = import_onnx(path)
    assert [layer.kind for layer in model.layers] == ["conv3x3", "relu", "maxpool2", "dense"]
    assert model.input_shape == (2, 7, 6) and notes["softmax"] == softmax
    x = rng.uniform(0, 1, (16, 2, 7, 6))
    assert compare_with_onnxruntime(path, model, x, notes["softmax"]) < 1e-5


def test_mlp_of_matmul_and_add_agrees_with_onnxruntime(tmp_path):
    rng = np.random.default_rng(1)
    inits = {"w1": rng.normal(0, 0.3, (12, 8)), "b1": rng.normal(0, 0.1, 8),
             "w2": rng.normal(0, 0.3, (8, 3)), "b2": rng.normal(0, 0.1, 3)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"]),
             helper.make_node("Add", ["m1", "b1"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w2"], ["m2"]),
             helper.make_node("Add", ["m2", "b2"], ["y"])]
    path = _save(tmp_path, nodes, inits, ["N", 12], ["N", 3])
    model, notes = import_onnx(path)
    assert model.input_shape == (12, 1, 1)
    assert [layer.kind for layer in model.layers] == ["dense", "relu", "dense"]
    x = rng.uniform(0, 1, (10, 12))
    assert compare_with_onnxruntime(path, model, x, notes["softmax"]) < 1e-5


@pytest.mark.parametrize("node, words", [
    (helper.make_node("Sigmoid", ["x"], ["y"], name="sig"),
     "node 'sig' (Sigmoid): operator Sigmoid is not supported; supported: Conv 3x3"),
    (helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                      pads=[1, 1, 1, 1], name="c2"),
     "node 'c2' (Conv): only 3x3 convolutions with stride 1"),
    (helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], name="mp"),
     "node 'mp' (MaxPool): only 2x2 max-pooling"),
])
def test_unsupported_nodes_are_named(tmp_path, node, words):
    inits = {"w": np.zeros((2, 2, 3, 3))} if node.op_type == "Conv" else {}
    path = _save(tmp_path, [node], inits, ["N", 2, 6, 6], ["N", 2, 6, 6])
    with pytest.raises(OnnxImportError, match=words.replace("(", r"\(").replace(")", r"\)")):
        import_onnx(path)


def test_dynamic_shapes_and_bad_files_are_one_error(tmp_path):
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], {}, ["N", 2, "H", 6],
                 ["N", 2, "H", 6])
    with pytest.raises(OnnxImportError, match=r"shape \(\?, 2, \?, 6\).*static shapes"):
        import_onnx(path)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01 not protobuf at all \xff" * 10)
    with pytest.raises(OnnxImportError, match="not a valid ONNX model"):
        import_onnx(bad)
    with pytest.raises(OnnxImportError, match="no such ONNX file"):
        import_onnx(tmp_path / "missing.onnx")


def test_compress_takes_an_onnx_model_and_your_data(tmp_path, capsys, digits_data):
    """``compress --float-model m.onnx --data d.npz``: the import is checked against
    onnxruntime on the data, and the compressed model file is written."""
    from shiftpool.sw.model.file import load_model

    from shiftpool.cli import main

    rng = np.random.default_rng(3)
    inits = {"w1": rng.normal(0, 0.3, (64, 32)), "b1": rng.normal(0, 0.1, 32),
             "w2": rng.normal(0, 0.3, (32, 10)), "b2": rng.normal(0, 0.1, 10)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"]),
             helper.make_node("Add", ["m1", "b1"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["r1"]),
             helper.make_node("Gemm", ["r1", "w2", "b2"], ["y"])]
    path = _save(tmp_path, nodes, {"w1": inits["w1"], "b1": inits["b1"],
                                   "w2": inits["w2"], "b2": inits["b2"]}, ["N", 64], ["N", 10])
    x = np.concatenate([digits_data[0], digits_data[2]]).reshape(-1, 64)
    y = np.concatenate([digits_data[1], digits_data[3]])
    data = tmp_path / "d.npz"
    np.savez(data, x=x, y=y)
    out = tmp_path / "m.npz"
    code = main(["compress", "--scheme", "int8", "--float-model", str(path), "--data",
                 str(data), "--epochs", "1", "-o", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "float outputs agree with onnxruntime" in stdout
    assert load_model(out).input_shape == (64, 1, 1)
    # Data that does not fit the model: one line, nothing written.
    np.savez(data, x=x[:, :60], y=y)
    code = main(["compress", "--float-model", str(path), "--data", str(data), "-o",
                 str(tmp_path / "n.npz")])
    _, err = capsys.readouterr()
    assert code == 2 and "field 'x' has shape" in err.strip().splitlines()[-1]
    assert not (tmp_path / "n.npz").exists()


def test_a_pytorch_export_imports_and_compresses(tmp_path, capsys):
    """``tests/data/torch_cnn.onnx``, exported by torch 2.13.0's default exporter
    (``scripts/export_torch_cnn.py``: two conv + batch norm + ReLU + max-pool blocks,
    two linear layers, a dynamic batch axis): the import agrees with onnxruntime, and
    ``compress`` fine-tunes it on the digits into a model the compiler lays out."""
    from pathlib import Path

    from shiftpool.sw.compile.fit import fit_config
    from shiftpool.sw.model.file import load_model

    from shiftpool.cli import main

    path = Path(__file__).parent / "data" / "torch_cnn.onnx"
    model, notes = import_onnx(path)
    assert [layer.kind for layer in model.layers] == [
        "conv3x3", "relu", "maxpool2", "conv3x3", "relu", "maxpool2", "dense", "relu", "dense"]
    assert model.input_shape == (1, 8, 8) and not notes["softmax"]
    x = np.random.default_rng(0).uniform(0, 1, (32, 1, 8, 8))
    assert compare_with_onnxruntime(path, model, x, False) < 1e-5
    out = tmp_path / "m.npz"
    code = main(["compress", "--scheme", "flightnn", "--float-model", str(path), "--data",
                 "digits", "--epochs", "1", "-o", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "float outputs agree with onnxruntime" in stdout
    qm = load_model(out)
    assert qm.scheme == "flightnn" and fit_config(qm, lanes=2, taps=4).engine == "shiftadd"
