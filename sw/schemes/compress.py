"""Float model -> integer :class:`~shiftpool.sw.model.file.QuantModel`.

:func:`compress` fine-tunes a copy of a float model with a quantizer in the loop
(straight-through estimator), then integerizes it:

- inputs are unsigned ``act_bits`` integers with ``input_frac = act_bits`` fraction
  bits (``QuantModel.quantize_input``);
- each MAC layer's integer weights are at scale ``2**-wf``: for FLightNN / LightNN-2
  ``wf = -emin`` of the layer's exponent window and the weights are term codes; for
  int8 ``wf = floor(log2(127 / max|w|))``; for weight pools (:mod:`.pool`) the
  weights are pool vectors and ``wf`` is the layer's fitted power-of-two scale (a
  pool layer's accumulator is at ``2**-(f_in + wf - lut_shift)``, see
  :func:`.pool_golden.model_lut`);
- each hidden MAC layer's output gets ``f_out`` fraction bits, calibrated on the
  training set so its largest activation fits ``act_bits``; the requantizing shift
  is ``f_in + wf - f_out``; the last layer outputs raw accumulators at
  ``output_frac = f_in + wf``.

:func:`evaluate` measures the accuracy of the result with the golden model.
"""

from __future__ import annotations

import numpy as np

from ..model.file import Layer, QuantModel
from ..train.nn import FloatModel
from . import golden
from .int8 import round_half_away
from .registry import get_scheme

__all__ = ["compress", "evaluate"]

_MAC = ("conv3x3", "dense")


def _check_data(model: FloatModel, x_train, y_train, x_test, y_test) -> None:
    if not isinstance(model, FloatModel):
        raise ValueError(f"float_model must be a FloatModel, not {type(model).__name__}")
    for xn, yn, x, y in (("x_train", "y_train", x_train, y_train),
                         ("x_test", "y_test", x_test, y_test)):
        if (x is None) != (y is None):
            raise ValueError(f"give both {xn} and {yn} or neither")
        if x is None:
            continue
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim != 4 or tuple(x.shape[1:]) != model.input_shape or len(x) == 0:
            raise ValueError(f"{xn}: shape {x.shape} must be (N, *{model.input_shape}), N > 0")
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{yn}: needs {len(x)} integer labels, has {y.shape} {y.dtype}")


def _structure(model: FloatModel) -> list[tuple[int, str, bool]]:
    """``(float layer index, kind, relu)`` of each integer layer; ReLUs fold into
    the MAC before them. Raises ValueError if the model has no integer form."""
    out: list[tuple[int, str, bool]] = []
    layers = model.layers
    for i, layer in enumerate(layers):
        if layer.kind == "relu":
            if i == 0 or layers[i - 1].kind not in _MAC:
                raise ValueError(f"float_model: layer {i}: relu must follow conv3x3 or dense "
                                 f"(integer activations are requantized MAC outputs)")
            continue
        if layer.kind == "maxpool2":
            out.append((i, "maxpool2", False))
            continue
        relu = i + 1 < len(layers) and layers[i + 1].kind == "relu"
        last = i == len(layers) - 1
        if relu == last:
            raise ValueError(f"float_model: layer {i}: every hidden {layer.kind} needs a relu "
                             f"after it and the last layer must be a MAC without relu")
        out.append((i, layer.kind, relu))
    if not out or out[-1][1] not in _MAC:
        raise ValueError("float_model: the last layer must be conv3x3 or dense")
    return out


def compress(float_model: FloatModel, scheme: str, *, x_train: np.ndarray,
             y_train: np.ndarray, x_test: np.ndarray | None = None,
             y_test: np.ndarray | None = None, seed: int = 0, progress: bool = True,
             **options) -> QuantModel:
    """Compress ``float_model`` into an integer model.

    Parameters
    ----------
    float_model:
        Trained model: MAC layers (each hidden one followed by a ReLU), max-pools,
        and a final MAC layer without ReLU. It is not modified.
    scheme:
        A registered scheme (:func:`~shiftpool.sw.schemes.registry.schemes`):
        ``"flightnn"`` (1 or 2 power-of-two terms per weight, k per filter),
        ``"lightnn2"`` (2 terms everywhere), ``"int8"`` (int8 weights, power-of-two
        scale per layer) or ``"pool"`` (one network-wide pool of 8-vectors, bit-serial
        lookup; layers whose input channels are not a multiple of 8 stay int8).
    x_train, y_train:
        Fine-tuning and activation calibration data (float inputs, integer labels).
    x_test, y_test:
        Optional; when given, ``meta`` records the float and compressed accuracy.
    seed:
        Seed of the fine-tuning (and of the scheme's own randomness, e.g. k-means).
    progress:
        Show a progress bar while fine-tuning.
    **options:
        The scheme's options and :data:`~shiftpool.sw.schemes.registry.COMMON_OPTIONS`
        (``act_bits``, ``epochs``, ``batch_size``, ``lr``), each declared once with its
        default and range by its :class:`~shiftpool.sw.schemes.registry.Option`
        (FLightNN: ``exp_bits``, ``k1_target``, ``lam``; pools: ``pool_size``,
        ``pool_bits``, ``lut_bits``). Options of other schemes are accepted and
        ignored, so one set of options can drive several schemes.

    Returns
    -------
    QuantModel
        Validated; ``meta`` holds the scheme name, its options, what the scheme
        records (k = 1 shares, the pool's storage figures, ...) and the accuracies
        (if test data was given).

    Raises
    ------
    ValueError
        For an unknown scheme or option, out-of-range options, mis-shaped data, or
        a float model without an integer form.
    """
    spec = get_scheme(scheme)
    values = spec.option_values(options)
    _check_data(float_model, x_train, y_train, x_test, y_test)
    structure = _structure(float_model)
    x_train = np.asarray(x_train, dtype=np.float64)
    y_train = np.asarray(y_train)
    model = float_model.copy()
    act_bits = values["act_bits"]

    quantizer = spec.quantizer(model, values, seed)
    model = quantizer.fit(model, x_train, y_train, values, seed, progress)
    structure = _structure(model)

    qm = QuantModel(scheme=spec.stored_as, act_bits=act_bits, input_shape=model.input_shape,
                    input_frac=act_bits, layers=[], exp_bits=0)
    for name, value in quantizer.model_fields().items():
        setattr(qm, name, value)
    quantizer.begin(qm)
    a = qm.quantize_input(x_train)
    f_in = act_bits
    for i, kind, relu in structure:
        in_shape = tuple(int(s) for s in a.shape[1:])
        if kind == "maxpool2":
            a = golden.maxpool2(a)  # keeps the fraction bits
            qm.layers.append(Layer("maxpool2", in_shape, tuple(a.shape[1:])))
            continue
        layer = model.layers[i]
        fields, wf = quantizer.integerize(i, layer.weight)
        new = Layer(kind, in_shape, (), **fields)
        acc_frac = f_in + wf
        bias = round_half_away(layer.bias * 2.0 ** acc_frac)
        mac = quantizer.mac(new, a)
        v = mac + (bias[None, :, None, None] if kind == "conv3x3" else bias[None, :])
        if relu:
            # The largest ReLU output of the integer-weight layer on the training set.
            max_act = float(max(int(v.max()), 0)) * 2.0 ** -acc_frac
            f_out = (int(np.floor(np.log2(((1 << act_bits) - 1) / max_act))) if max_act > 0
                     else acc_frac)
            shift = acc_frac - f_out
            if shift < 0:
                f_out, shift = acc_frac, 0
            a = golden.requantize(v, shift, act_bits)
            f_in = f_out
        else:
            shift = 0
            a = v
            qm.output_frac = acc_frac
        new.bias, new.shift, new.relu = bias, int(shift), relu
        new.out_shape = tuple(int(s) for s in v.shape[1:])
        qm.layers.append(new)

    qm.meta = {"scheme": scheme, "seed": seed, "train_samples": len(x_train), **values}
    if float_model.meta:
        qm.meta["float_model"] = float_model.meta
    qm.validate()
    qm.meta.update(quantizer.meta(qm))
    if x_test is not None:
        qm.meta["float_accuracy"] = float_model.accuracy(x_test, y_test)
        qm.meta["accuracy"] = evaluate(qm, x_test, y_test)
    return qm


def evaluate(qm: QuantModel, x: np.ndarray, y: np.ndarray, bits: int | None = None) -> float:
    """Accuracy of ``qm`` on float inputs ``x`` (quantized with ``qm.quantize_input``)
    against labels ``y``, computed by the golden model; ``bits`` is a pool model's
    run-time precision (``golden.run``)."""
    y = np.asarray(y)
    if len(y) == 0 or y.shape != (len(x),):
        raise ValueError(f"y: needs {len(x)} labels (N > 0), has shape {y.shape}")
    logits = golden.run(qm, qm.quantize_input(x), bits=bits)
    return float(np.mean(logits.argmax(axis=1) == y))
