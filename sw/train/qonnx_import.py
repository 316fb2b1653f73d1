"""QONNX models (as Brevitas exports them) as shiftpool int8 models, and a check of the
import against qonnx's own execution.

A QONNX graph carries its quantizers as ``Quant`` nodes
(``y = (clip(round(x / scale + zeropt), lo, hi) - zeropt) * scale``). The chain must
be what the int8 engine runs, with the quantizers where its integers are:

- the graph input, then a ``Quant`` (unsigned, ``A`` bits, scale ``2**-f``): the
  model's ``act_bits = A`` and ``input_frac = f``;
- ``Conv`` (3x3, stride 1, padding 1) or ``Gemm`` / ``MatMul`` (+ ``Add``) whose
  weight is a ``Quant`` of a constant: signed, at most 8 bits, zero point 0, one
  power-of-two scale ``2**-wf`` per layer, integers in ``-127..127``; its bias a
  ``Quant`` of a constant or a plain constant;
- after every hidden MAC layer ``Relu`` then a ``Quant`` (unsigned, ``A`` bits,
  power-of-two scale): the requantizer (``docs/arithmetic.md`` §6) with
  ``shift = f_in + wf - f_out >= 0``; ``MaxPool`` 2x2 and ``Flatten`` / ``Reshape``
  as in :mod:`.onnx_import`, before or after that ``Quant``;
- a last ``Gemm`` / ``MatMul`` without ``Relu`` or ``Quant``: the logits, at scale
  ``2**-(f_in + wf)``.

What maps exactly, and what does not (the import says which in its notes):

- power-of-two scales and a bias on the accumulator's grid: the integers are the
  ones qonnx computes, so the golden model's logits times ``2**-output_frac`` equal
  qonnx's outputs (both sides are exact while ``|logit|`` stays below ``2**24``
  accumulator steps, float32's integer range);
- activation ``Quant`` nodes with ``rounding_mode = "HALF_UP"``: exact (post-ReLU
  values are not negative, so qonnx's halves-away-from-zero is the requantizer's
  halves-up); with ``"ROUND"`` / ``"HALF_EVEN"`` (qonnx's default): exact too, the
  model's ``rounding`` is ``"half_even"`` and the requantizer rounds halves to even
  (``docs/arithmetic.md`` §6). One model has one rounding: a graph that mixes them is
  refused;
- a scale that is not a power of two, or a signed / zero-point activation quantizer:
  refused, naming the node (the accelerator's scales are powers of two and its
  activations unsigned), rather than imported with an error no one measured.

``BipolarQuant`` weights (``+scale`` where ``w >= 0``, else ``-scale``; a power-of-two
scale ``2**-wf``) are integers ``+1`` / ``-1`` at scale ``2**-wf``: exact on the int8
engine, and with ``binary=True`` (``compress --scheme rbnn``) on the binary engine as a
one-round rbnn model (2-bit slots), when every MAC layer is dense with binarized
weights; a binarized activation is refused (the accelerator's are unsigned).

The input ``Quant`` rounds halves to even in qonnx, :meth:`QuantModel.quantize_input`
halves up; :func:`compare_with_qonnx` feeds both sides the same integer grid, so the
comparison is of the network, not of two input roundings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..model.file import Layer, ModelError, QuantModel
from .onnx_import import OnnxImportError, _attrs, _input_shape, _onnx, _where

__all__ = ["QonnxImportError", "compare_with_qonnx", "import_qonnx"]

SUPPORTED = ("Quant (power-of-two scales, zero point 0), BipolarQuant of weights (power-of-two "
             "scale), Conv 3x3/stride 1/pad 1, Gemm, "
             "MatMul (+ Add), Relu, MaxPool 2x2/stride 2, Flatten, Reshape to (N, -1), "
             "Identity, Dropout")


class QonnxImportError(OnnxImportError):
    """A QONNX model the int8 engine cannot run exactly, or a file that is not one."""


def _pow2_exponent(scale: np.ndarray, where: str, what: str) -> int:
    """``e`` with ``scale == 2**e`` (one value), else an error naming the node."""
    values = np.unique(np.asarray(scale, dtype=np.float64).reshape(-1))
    if len(values) != 1:
        raise QonnxImportError(f"{where}: {what} has {len(values)} scales (per channel); the "
                               f"accelerator has one power-of-two scale per layer")
    value = float(values[0])
    mant, exp = np.frexp(value)
    if value <= 0 or mant != 0.5:
        raise QonnxImportError(f"{where}: {what} has scale {value!r}, not a power of two; "
                               f"the accelerator's scales are powers of two (retrain with "
                               f"power-of-two scales, e.g. Brevitas' *FixedPoint quantizers)")
    return int(exp) - 1


def _quant_params(node, consts, where) -> tuple[int, int, bool, bool, str]:
    """``(scale exponent, bits, signed, narrow, rounding)`` of a ``Quant`` node."""
    attrs = _attrs(node)
    names = list(node.input)
    if len(names) != 4 or any(n not in consts for n in names[1:]):
        raise QonnxImportError(f"{where}: scale, zero point and bit width must be constants")
    scale, zeropt, bits = (consts[n] for n in names[1:])
    if np.any(np.asarray(zeropt) != 0):
        raise QonnxImportError(f"{where}: zero point {np.unique(zeropt).tolist()} is not 0; "
                               f"the accelerator's quantizers are symmetric")
    bits = np.unique(np.asarray(bits).reshape(-1))
    if len(bits) != 1 or bits[0] != int(bits[0]) or not 1 <= bits[0] <= 32:
        raise QonnxImportError(f"{where}: bit width {bits.tolist()} must be one integer in "
                               f"1..32")
    rounding = attrs.get("rounding_mode", b"ROUND")
    rounding = (rounding.decode() if isinstance(rounding, bytes) else str(rounding)).upper()
    return (_pow2_exponent(scale, where, "the Quant"), int(bits[0]),
            bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0)), rounding)


def _quantized_constant(node, consts, where) -> tuple[np.ndarray, int]:
    """A ``Quant`` of a constant as ``(integers, scale exponent)``, as qonnx computes
    it (``qonnx.custom_op.general.quant.quant``)."""
    from qonnx.custom_op.general.quant import quant

    exp, bits, signed, narrow, rounding = _quant_params(node, consts, where)
    scale = np.float64(2.0 ** exp)
    y = quant(consts[node.input[0]], scale, np.float64(0), np.float64(bits), signed, narrow,
              rounding)
    return np.asarray(np.round(np.asarray(y) / scale), dtype=np.int64), exp


def _bipolar_constant(node, consts, where) -> tuple[np.ndarray, int]:
    """A ``BipolarQuant`` of a constant as ``(+1/-1 integers, scale exponent)``, as
    qonnx computes it (``qonnx.custom_op.general.bipolar_quant.binary_quant``)."""
    from qonnx.custom_op.general.bipolar_quant import binary_quant

    names = list(node.input)
    if len(names) != 2 or names[1] not in consts:
        raise QonnxImportError(f"{where}: the scale must be a constant")
    exp = _pow2_exponent(consts[names[1]], where, "the BipolarQuant")
    return np.asarray(binary_quant(consts[names[0]], 1.0), dtype=np.int64), exp


def import_qonnx(path: str | Path, binary: bool = False) -> tuple[QuantModel, dict]:
    """Read the QONNX model at ``path`` as an int8 model (see the module docstring);
    with ``binary``, as a binary-weight model for the binary engine (every MAC layer a
    dense layer whose weight is a ``BipolarQuant``).

    Returns the model and notes: ``"nodes"`` (the operators read), ``"exact"``
    (whether every quantizer maps bit-exactly) and ``"inexact"`` (one line per node
    that does not, with the error it can introduce).

    Raises
    ------
    QonnxImportError
        For a file that is not an ONNX model, a missing ``qonnx`` package, and every
        node the int8 engine cannot run.
    """
    onnx = _onnx()
    try:
        import qonnx  # noqa: F401
    except ImportError:
        raise QonnxImportError("QONNX import needs the 'qonnx' package: pip install "
                               "'shiftpool[onnx]'") from None
    from onnx import numpy_helper

    path = Path(path)
    try:
        model = onnx.load(str(path))
    except FileNotFoundError:
        raise QonnxImportError(f"{path}: no such ONNX file") from None
    except Exception as exc:       # onnx raises DecodeError and others
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QonnxImportError(f"{path}: not a valid ONNX model ({first})") from None
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in graph.initializer}
    name, input_shape = _input_shape(graph, consts)
    walk = _Walk(input_shape)
    notes = {"nodes": [], "inexact": []}
    current = name
    for node in graph.node:
        op, attrs, where = node.op_type, _attrs(node), _where(node)
        notes["nodes"].append(op)
        if op == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(attrs["value"]).astype(np.float64)
            continue
        if op == "Quant" and node.input[0] in consts:
            walk.quantized[node.output[0]] = _quantized_constant(node, consts, where)
            continue
        if op == "BipolarQuant" and node.input[0] in consts:
            walk.quantized[node.output[0]] = _bipolar_constant(node, consts, where)
            walk.bipolar.add(node.output[0])
            continue
        if op == "BipolarQuant":
            raise QonnxImportError(f"{where}: BipolarQuant of activations: the accelerator's "
                                   f"activations are unsigned (0 .. 2**A - 1); binarize the "
                                   f"weights only")
        data_inputs = [i for i in node.input if i and i not in consts and i not in
                       walk.quantized]
        if data_inputs != [current]:
            raise QonnxImportError(f"{where}: shiftpool runs a chain of layers; this node's "
                                   f"data inputs are {data_inputs}, expected [{current!r}]")
        params = [walk.quantized.get(i, consts.get(i)) for i in node.input[1:] if i]
        walk.weight_bipolar = len(node.input) > 1 and node.input[1] in walk.bipolar
        if op == "Quant":
            walk.activation_quant(_quant_params(node, consts, where), where, notes)
        elif op == "Conv":
            walk.conv(attrs, params, where)
        elif op == "Gemm":
            if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 \
                    or attrs.get("transA", 0):
                raise QonnxImportError(f"{where}: needs alpha = beta = 1 and transA = 0")
            walk.dense(params, bool(attrs.get("transB", 0)), where)
        elif op == "MatMul":
            walk.dense(params, False, where)
        elif op == "Add":
            walk.add_bias(params, where)
        elif op == "Relu":
            walk.relu(where)
        elif op == "MaxPool":
            if (list(attrs.get("kernel_shape", [])) != [2, 2]
                    or list(attrs.get("strides", [1, 1])) != [2, 2]
                    or any(attrs.get("pads", [0, 0, 0, 0])) or attrs.get("ceil_mode", 0)):
                raise QonnxImportError(f"{where}: only 2x2 max-pooling with stride 2 and no "
                                       f"padding is supported, not {attrs}")
            walk.maxpool(where)
        elif op in ("Flatten", "Reshape", "Identity", "Dropout"):
            if op == "Flatten" and attrs.get("axis", 1) != 1:
                raise QonnxImportError(f"{where}: only Flatten with axis = 1 is supported")
        else:
            raise QonnxImportError(f"{where}: operator {op} is not supported in a QONNX "
                                   f"model; supported: {SUPPORTED}")
        current = node.output[0]
    qm = walk.finish(path, binary)
    notes["exact"] = not notes["inexact"] and not walk.bias_rounded
    notes["inexact"] += walk.bias_rounded
    return qm, notes


class _Walk:
    """The chain read so far: integer layers, the current scale and what is pending."""

    def __init__(self, input_shape):
        self.input_shape = tuple(int(s) for s in input_shape)
        self.shape = self.input_shape
        self.quantized: dict[str, tuple[np.ndarray, int]] = {}
        self.layers: list[Layer] = []
        self.act_bits = self.input_frac = None
        self.frac = None            # fraction bits of the current integers
        self.pending = None         # a MAC layer waiting for its Relu + Quant (or the end)
        self.relu_seen = False
        self.bias_rounded: list[str] = []
        self.rounding = None        # of the activation Quant nodes, once one is read
        self.bipolar: set[str] = set()      # outputs of BipolarQuant nodes of constants
        self.weight_bipolar = False     # the node being read has a BipolarQuant weight
        self.layer_nodes: list[tuple[str, bool]] = []   # per MAC layer: node, bipolar

    def activation_quant(self, params, where, notes) -> None:
        exp, bits, signed, narrow, rounding = params
        if signed or narrow:
            raise QonnxImportError(f"{where}: activations must be quantized unsigned and not "
                                   f"narrow (the accelerator's are 0 .. 2**A - 1)")
        if not 2 <= bits <= 16:
            raise QonnxImportError(f"{where}: {bits}-bit activations; the accelerator's are "
                                   f"2..16 bits")
        if self.act_bits is None:
            if self.layers or self.pending:
                raise QonnxImportError(f"{where}: the first Quant must be on the input")
            self.act_bits, self.input_frac, self.frac = bits, -exp, -exp
            return
        if bits != self.act_bits:
            raise QonnxImportError(f"{where}: {bits}-bit activations after the input's "
                                   f"{self.act_bits}; the accelerator has one activation "
                                   f"width")
        if self.pending is None or not self.relu_seen:
            raise QonnxImportError(f"{where}: an activation Quant must follow a MAC layer "
                                   f"and its Relu")
        layer, acc_frac = self.pending
        shift = acc_frac + exp
        if shift < 0:
            raise QonnxImportError(f"{where}: scale 2**{exp} is finer than the layer's "
                                   f"accumulator (2**{-acc_frac}); the requantizer only "
                                   f"shifts right")
        mode = {"HALF_UP": "half_up", "ROUND": "half_even", "HALF_EVEN": "half_even"}.get(
            rounding)
        if mode is None:
            raise QonnxImportError(f"{where}: rounding_mode {rounding} is not supported "
                                   f"(HALF_UP, ROUND and HALF_EVEN are)")
        if self.rounding not in (None, mode):
            raise QonnxImportError(f"{where}: rounding_mode {rounding} after "
                                   f"{self.rounding} in an earlier layer; the requantizer "
                                   f"rounds one way in the whole model")
        self.rounding = mode
        layer.shift, layer.relu = int(shift), True
        self._emit_pending()
        self.frac = -exp

    def _need_input_quant(self, where):
        if self.act_bits is None:
            raise QonnxImportError(f"{where}: the input must go through a Quant first "
                                   f"(unsigned, power-of-two scale)")
        if self.pending is not None:
            raise QonnxImportError(f"{where}: a hidden MAC layer must be followed by Relu and "
                                   f"an activation Quant before the next layer")

    def _weight(self, param, where) -> tuple[np.ndarray, int]:
        if not isinstance(param, tuple):
            raise QonnxImportError(f"{where}: its weight must be a Quant of a constant "
                                   f"(a float weight has no integers to run exactly)")
        w, exp = param
        if w.size and (w.min() < -127 or w.max() > 127):
            raise QonnxImportError(f"{where}: weight integers {w.min()}..{w.max()} leave "
                                   f"-127..127 (quantize with at most 8 signed bits, narrow "
                                   f"range)")
        return w, -exp

    def _bias(self, param, acc_frac, where) -> np.ndarray:
        if param is None:
            return None
        if isinstance(param, tuple):
            b, exp = param
            value = b.astype(np.float64) * 2.0 ** exp
        else:
            value = np.asarray(param, dtype=np.float64)
        scaled = value.reshape(-1) * 2.0 ** acc_frac
        rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
        if not np.array_equal(rounded, scaled):
            self.bias_rounded.append(
                f"{where}: bias off the accumulator's grid (2**{-acc_frac}): rounded, at "
                f"most half an accumulator step per output")
        return rounded.astype(np.int64)

    def conv(self, attrs, params, where) -> None:
        self._need_input_quant(where)
        w, wf = self._weight(params[0], where)
        ok = (w.ndim == 4 and w.shape[2:] == (3, 3)
              and list(attrs.get("strides", [1, 1])) == [1, 1]
              and list(attrs.get("dilations", [1, 1])) == [1, 1] and attrs.get("group", 1) == 1
              and list(attrs.get("pads", [])) == [1, 1, 1, 1])
        if not ok or len(self.shape) != 3 or w.shape[1] != self.shape[0]:
            raise QonnxImportError(f"{where}: only 3x3 convolutions with stride 1, padding 1, "
                                   f"one group, on a (C, H, W) map of matching channels are "
                                   f"supported")
        acc_frac = self.frac + wf
        bias = self._bias(params[1] if len(params) > 1 else None, acc_frac, where)
        out = (int(w.shape[0]),) + self.shape[1:]
        layer = Layer("conv3x3", self.shape, out, weight=w.astype(np.int8),
                      bias=bias if bias is not None else np.zeros(out[0], np.int64))
        self.layer_nodes.append((where, self.weight_bipolar))
        self.pending, self.relu_seen, self.shape = (layer, acc_frac), False, out

    def dense(self, params, trans_b, where) -> None:
        self._need_input_quant(where)
        w, wf = self._weight(params[0], where)
        w = w if trans_b else w.T
        size = int(np.prod(self.shape))
        if w.ndim != 2 or w.shape[1] != size:
            raise QonnxImportError(f"{where}: weight shape {w.shape} does not take the "
                                   f"{size} inputs it gets")
        acc_frac = self.frac + wf
        bias = self._bias(params[1] if len(params) > 1 else None, acc_frac, where)
        layer = Layer("dense", self.shape, (int(w.shape[0]),), weight=w.astype(np.int8),
                      bias=bias if bias is not None else np.zeros(w.shape[0], np.int64))
        self.layer_nodes.append((where, self.weight_bipolar))
        self.pending, self.relu_seen, self.shape = (layer, acc_frac), False, (int(w.shape[0]),)

    def add_bias(self, params, where) -> None:
        if self.pending is None or self.relu_seen or self.pending[0].kind != "dense" \
                or len(params) != 1 or not np.all(self.pending[0].bias == 0):
            raise QonnxImportError(f"{where}: an Add is supported only as the bias of a "
                                   f"MatMul or Gemm without one")
        layer, acc_frac = self.pending
        layer.bias = self._bias(params[0], acc_frac, where)

    def relu(self, where) -> None:
        if self.pending is None or self.relu_seen:
            raise QonnxImportError(f"{where}: a Relu must follow a MAC layer (the "
                                   f"accelerator's activations are requantized MAC outputs)")
        self.relu_seen = True

    def maxpool(self, where) -> None:
        if self.pending is not None or len(self.shape) != 3:
            raise QonnxImportError(f"{where}: a MaxPool must come after a layer's activation "
                                   f"Quant, on a (C, H, W) map")
        c, h, w = self.shape
        out = (c, h // 2, w // 2)
        self.layers.append(Layer("maxpool2", self.shape, out))
        self.shape = out

    def _emit_pending(self) -> None:
        self.layers.append(self.pending[0])
        self.pending, self.relu_seen = None, False

    def _binarize(self) -> None:
        """The int8 layers as binary-weight layers for the binary engine: each weight
        ``+1`` / ``-1`` a 2-bit storage slot read in one round (bit 1 set for ``-1``,
        ``docs/model-format.md`` §2.12), so a plain binary network is a one-round
        rbnn model."""
        for (where, bipolar), layer in zip(self.layer_nodes,
                                           (layer for layer in self.layers if layer.is_mac),
                                           strict=True):
            if not bipolar:
                raise QonnxImportError(f"{where}: the binary engine needs every weight "
                                       f"binarized (a BipolarQuant of a constant); this "
                                       f"layer's is a Quant (import without --scheme rbnn "
                                       f"for the int8 engine)")
            if layer.kind != "dense":
                raise QonnxImportError(f"{where}: the binary engine runs dense layers only "
                                       f"(Gemm / MatMul), not a {layer.kind}; import without "
                                       f"--scheme rbnn for the int8 engine")
            w = np.asarray(layer.weight, dtype=np.int64)
            layer.slots = np.where(w < 0, 2, 0).astype(np.uint16)
            layer.slot_bits, layer.rounds, layer.expand, layer.weight = 2, 1, "outputs", None

    def finish(self, path, binary: bool = False) -> QuantModel:
        if self.pending is None or self.relu_seen:
            raise QonnxImportError(f"{path}: the graph must end in a Gemm or MatMul without "
                                   f"Relu or Quant (the accelerator returns its accumulators)")
        layer, acc_frac = self.pending
        self._emit_pending()
        if binary:
            self._binarize()
        qm = QuantModel(scheme="rbnn" if binary else "int8", act_bits=self.act_bits,
                        input_shape=self.input_shape,
                        input_frac=self.input_frac, layers=self.layers, exp_bits=0,
                        output_frac=acc_frac, rounding=self.rounding or "half_up",
                        meta={"source": str(path), "imported": "qonnx"})
        try:
            qm.validate()
        except ModelError as exc:
            raise QonnxImportError(f"{path}: the imported layers are not a model the "
                                   f"accelerator runs: {exc}") from None
        return qm


def compare_with_qonnx(path: str | Path, qm: QuantModel, x: np.ndarray) -> dict:
    """Run ``x`` (floats, ``(N, *input shape of the ONNX graph)``) through qonnx's
    executor (``qonnx.core.onnx_exec.execute_onnx``) and through the golden model.

    Both sides get the same integer inputs (``qm.quantize_input(x)`` at scale
    ``2**-input_frac``). Returns ``{"samples", "equal", "max_abs_diff"}``: the samples
    whose outputs are identical (golden logits times ``2**-output_frac`` against
    qonnx's float32 outputs) and the largest difference.
    """
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    from ..schemes import golden

    wrapper = ModelWrapper(str(path)).transform(InferShapes())
    feed = wrapper.graph.input[0]
    out_name = wrapper.graph.output[0].name
    shape = [d.dim_value for d in feed.type.tensor_type.shape.dim]
    xs = np.asarray(x, dtype=np.float64)
    q = qm.quantize_input(xs.reshape(len(xs), *qm.input_shape))
    ours = golden.run(qm, q).astype(np.float64) * 2.0 ** -qm.output_frac
    grid = (q * 2.0 ** -qm.input_frac).astype(np.float32)
    equal, worst = 0, 0.0
    for n in range(len(xs)):
        sample = grid[n].reshape([1] + shape[1:])
        ref = execute_onnx(wrapper, {feed.name: sample})[out_name].reshape(-1)
        diff = float(np.max(np.abs(ref.astype(np.float64) - ours[n])))
        equal += diff == 0.0
        worst = max(worst, diff)
    return {"samples": len(xs), "equal": int(equal), "max_abs_diff": worst}
