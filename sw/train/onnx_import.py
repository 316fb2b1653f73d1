"""Float ONNX models as shiftpool float models (:class:`~shiftpool.sw.train.nn.FloatModel`).

The graph must be a chain of operators the accelerator runs:

- ``Conv`` 3x3, stride 1, padding 1, no dilation, one group: ``Conv3x3``;
- ``Gemm`` (``alpha = beta = 1``, either ``transB``), ``MatMul`` (+ ``Add`` of a
  constant): ``Dense``;
- ``BatchNormalization`` after a Conv / Gemm / MatMul: folded into that layer's
  weights and bias;
- ``Relu``: ``ReLU``; ``MaxPool`` 2x2, stride 2, no padding: ``MaxPool2``;
- ``Flatten`` (axis 1), ``Reshape`` to ``(N, -1)``, ``Identity``, ``Dropout``:
  nothing (a dense layer flattens its input in C, H, W order);
- a final ``Softmax`` / ``LogSoftmax``: nothing (the accelerator returns logits,
  whose argmax is the same).

Weights and biases must be graph initializers (or ``Constant`` nodes). The input is
``(N, C, H, W)`` or ``(N, D)`` (then the float model's input is ``(D, 1, 1)``), with
every dimension but ``N`` fixed. Anything else is :class:`OnnxImportError` naming the
node, its operator and what is supported.

:func:`compare_with_onnxruntime` runs the ONNX model in onnxruntime and the imported
model in numpy on the same data and returns the largest difference of their outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .nn import Conv3x3, Dense, FloatModel, MaxPool2, ReLU

__all__ = ["OnnxImportError", "compare_with_onnxruntime", "import_onnx"]

SUPPORTED = ("Conv 3x3/stride 1/pad 1, Gemm, MatMul (+ Add), BatchNormalization after "
             "them, Relu, MaxPool 2x2/stride 2, Flatten, Reshape to (N, -1), Identity, "
             "Dropout, a final Softmax")


class OnnxImportError(ValueError):
    """An ONNX model shiftpool cannot run, or a file that is not one."""


def _onnx():
    try:
        import onnx
    except ImportError:
        raise OnnxImportError("ONNX import needs the 'onnx' package: pip install "
                              "'shiftpool[onnx]'") from None
    return onnx


def _attrs(node) -> dict:
    onnx = _onnx()
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _where(node) -> str:
    return f"node {node.name or '(unnamed)'!r} ({node.op_type})"


def _input_shape(graph, initializers) -> tuple[str, tuple]:
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise OnnxImportError(f"the graph has {len(inputs)} data inputs "
                              f"({', '.join(i.name for i in inputs)}); shiftpool takes one")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if len(shape) not in (2, 4) or any(s is None or s <= 0 for s in shape[1:]):
        text = ["?" if s is None else str(s) for s in shape]
        raise OnnxImportError(f"input {inputs[0].name!r} has shape ({', '.join(text)}): "
                              f"shiftpool needs (N, C, H, W) or (N, D) with every dimension "
                              f"but N fixed (export with static shapes)")
    sample = tuple(shape[1:]) if len(shape) == 4 else (shape[1], 1, 1)
    return inputs[0].name, sample


def import_onnx(path: str | Path) -> tuple[FloatModel, dict]:
    """Read the float ONNX model at ``path`` (see the module docstring).

    Returns the float model and notes on the import: ``{"softmax": bool}`` (whether a
    final softmax was dropped) and ``"nodes"`` (the ONNX operators read, in order).

    Raises
    ------
    OnnxImportError
        For a file that is not an ONNX model and for every unsupported node.
    """
    onnx = _onnx()
    from onnx import numpy_helper

    path = Path(path)
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except FileNotFoundError:
        raise OnnxImportError(f"{path}: no such ONNX file") from None
    except Exception as exc:       # onnx raises DecodeError, ValidationError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxImportError(f"{path}: not a valid ONNX model ({first})") from None
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in graph.initializer}
    name, input_shape = _input_shape(graph, consts)
    layers: list = []
    current = name
    notes = {"softmax": False, "nodes": []}
    nodes = list(graph.node)
    for index, node in enumerate(nodes):
        op, attrs, where = node.op_type, _attrs(node), _where(node)
        notes["nodes"].append(op)
        if op == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(attrs["value"]).astype(np.float64)
            continue
        data_inputs = [i for i in node.input if i and i not in consts]
        if data_inputs != [current]:
            raise OnnxImportError(f"{where}: shiftpool runs a chain of layers; this node's "
                                  f"data inputs are {data_inputs}, expected [{current!r}]")
        if notes["softmax"]:
            raise OnnxImportError(f"{where}: follows a Softmax; only a final Softmax is "
                                  f"supported")
        params = [consts[i] for i in node.input[1:] if i]
        if op == "Conv":
            _conv(node, attrs, params, layers, where)
        elif op == "Gemm":
            if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 \
                    or attrs.get("transA", 0):
                raise OnnxImportError(f"{where}: needs alpha = beta = 1 and transA = 0")
            w = params[0] if attrs.get("transB", 0) else params[0].T
            layers.append(_dense(w, params[1] if len(params) > 1 else None))
        elif op == "MatMul":
            layers.append(_dense(params[0].T, None))
        elif op == "Add":
            if not layers or not isinstance(layers[-1], Dense) or len(params) != 1:
                raise OnnxImportError(f"{where}: an Add is supported only as the bias of a "
                                      f"MatMul or Gemm")
            layers[-1].bias += np.broadcast_to(params[0].reshape(-1), layers[-1].bias.shape)
        elif op == "BatchNormalization":
            _fold_batchnorm(attrs, params, layers, where)
        elif op == "Relu":
            layers.append(ReLU())
        elif op == "MaxPool":
            if (list(attrs.get("kernel_shape", [])) != [2, 2]
                    or list(attrs.get("strides", [1, 1])) != [2, 2]
                    or any(attrs.get("pads", [0, 0, 0, 0]))
                    or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
                    or attrs.get("ceil_mode", 0)):
                raise OnnxImportError(f"{where}: only 2x2 max-pooling with stride 2 and no "
                                      f"padding is supported, not {attrs}")
            layers.append(MaxPool2())
        elif op == "Flatten":
            if attrs.get("axis", 1) != 1:
                raise OnnxImportError(f"{where}: only Flatten with axis = 1 is supported")
        elif op == "Reshape":
            shape = params[0].astype(np.int64).tolist() if params else []
            if len(shape) != 2 or shape[1] not in (-1, _size(layers, input_shape)):
                raise OnnxImportError(f"{where}: only a Reshape to (N, -1) (flatten) is "
                                      f"supported, not {shape}")
        elif op in ("Identity", "Dropout"):
            pass
        elif op in ("Softmax", "LogSoftmax") and index == len(nodes) - 1:
            notes["softmax"] = True
        else:
            raise OnnxImportError(f"{where}: operator {op} is not supported; supported: "
                                  f"{SUPPORTED}")
        current = node.output[0]
    try:
        float_model = FloatModel(layers, input_shape, meta={"source": str(path)})
    except ValueError as exc:
        raise OnnxImportError(f"{path}: the layers do not chain: {exc}") from None
    return float_model, notes


def _size(layers, input_shape) -> int:
    return int(np.prod(FloatModel(layers, input_shape).shapes()[-1]))


def _dense(w: np.ndarray, bias) -> Dense:
    layer = Dense(w.shape[1], w.shape[0])
    layer.weight[...] = w
    if bias is not None:
        layer.bias[...] = bias.reshape(-1)
    return layer


def _conv(node, attrs, params, layers, where) -> None:
    w = params[0]
    ok = (w.ndim == 4 and w.shape[2:] == (3, 3)
          and list(attrs.get("strides", [1, 1])) == [1, 1]
          and list(attrs.get("dilations", [1, 1])) == [1, 1]
          and attrs.get("group", 1) == 1
          and (list(attrs.get("pads", [])) == [1, 1, 1, 1]
               or attrs.get("auto_pad") in (b"SAME_UPPER", "SAME_UPPER")))
    if not ok:
        raise OnnxImportError(f"{where}: only 3x3 convolutions with stride 1, padding 1, "
                              f"no dilation and one group are supported (kernel "
                              f"{tuple(w.shape[2:])}, attributes {attrs})")
    layer = Conv3x3(w.shape[1], w.shape[0])
    layer.weight[...] = w
    if len(params) > 1:
        layer.bias[...] = params[1]
    layers.append(layer)


def _fold_batchnorm(attrs, params, layers, where) -> None:
    if not layers or not isinstance(layers[-1], (Conv3x3, Dense)):
        raise OnnxImportError(f"{where}: a BatchNormalization is supported only right "
                              f"after a Conv, Gemm or MatMul (it is folded into it)")
    scale, bias, mean, var = params[:4]
    k = scale / np.sqrt(var + attrs.get("epsilon", 1e-5))
    layer = layers[-1]
    layer.weight *= k.reshape((-1,) + (1,) * (layer.weight.ndim - 1))
    layer.bias[...] = (layer.bias - mean) * k + bias


def compare_with_onnxruntime(path: str | Path, float_model: FloatModel, x: np.ndarray,
                             softmax: bool) -> float:
    """Largest absolute difference between onnxruntime's outputs for ``x`` and the
    imported model's (through a softmax if the ONNX model ends in one)."""
    try:
        import onnxruntime
    except ImportError:
        raise OnnxImportError("checking the import needs 'onnxruntime': pip install "
                              "'shiftpool[onnx]'") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    rank = len(feed.shape)
    xs = np.asarray(x, dtype=np.float32)
    ref = session.run(None, {feed.name: xs.reshape(len(xs), -1) if rank == 2 else xs})[0]
    ours = float_model.forward(xs.reshape(len(xs), *float_model.input_shape))
    if softmax:
        e = np.exp(ours - ours.max(axis=1, keepdims=True))
        ours = e / e.sum(axis=1, keepdims=True)
    return float(np.max(np.abs(ref.astype(np.float64) - ours))) if len(xs) else 0.0
