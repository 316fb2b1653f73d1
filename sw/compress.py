"""Float model -> integer :class:`~shiftpool.sw.model.QuantModel`.

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

from . import golden, pool_golden
from .flightnn import FLightNNTransform, LightNNTransform, flightnn_quantize, term_codes
from .model import Layer, QuantModel
from .nn import FloatModel, WeightTransform, train
from .pool import PoolTransform, build_pool, pool_layer_indices, storage

__all__ = ["COMPRESS_SCHEMES", "compress", "evaluate", "round_half_away", "int8_frac",
           "int8_quantize", "Int8Transform"]

#: Schemes :func:`compress` accepts. "lightnn2" is FLightNN with k = 2 in every filter
#: (stored as scheme "flightnn").
COMPRESS_SCHEMES = ("flightnn", "lightnn2", "int8", "pool")
#: Largest pool :func:`compress` builds: the LUT has 256 x S entries.
MAX_COMPRESS_POOL = 256
_MAC = ("conv3x3", "dense")


def round_half_away(x: np.ndarray) -> np.ndarray:
    """Round to the nearest integer, halves away from zero (int64)."""
    x = np.asarray(x, dtype=np.float64)
    return (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.int64)


def int8_frac(w: np.ndarray) -> int:
    """Fraction bits of a layer's int8 weights: ``floor(log2(127 / max|w|))``.

    The largest weight then maps to at most 127; all-zero ``w`` gives 0.
    """
    peak = float(np.max(np.abs(w), initial=0.0))
    return int(np.floor(np.log2(127.0 / peak))) if peak > 0 else 0


def int8_quantize(w: np.ndarray) -> tuple[np.ndarray, int]:
    """Symmetric per-layer int8 with a power-of-two scale.

    Returns
    -------
    w_int, wf:
        ``clip(round_half_away(w * 2**wf), -127, 127)`` (int64) and ``wf`` from
        :func:`int8_frac`; ``w ~= w_int * 2**-wf``.
    """
    wf = int8_frac(w)
    return np.clip(round_half_away(np.asarray(w) * 2.0 ** wf), -127, 127), wf


class Int8Transform(WeightTransform):
    """Int8 fake quantization of every MAC layer; straight-through gradient."""

    def __call__(self, index: int, weight: np.ndarray) -> np.ndarray:
        w_int, wf = int8_quantize(weight)
        return w_int * 2.0 ** -wf


def _check_args(model, scheme, x_train, y_train, x_test, y_test, act_bits, exp_bits,
                k1_target, lam, epochs, batch_size, lr, pool_size, pool_bits, lut_bits) -> None:
    if not isinstance(model, FloatModel):
        raise ValueError(f"float_model must be a FloatModel, not {type(model).__name__}")
    if scheme not in COMPRESS_SCHEMES:
        raise ValueError(f"scheme {scheme!r} is unknown; allowed: {', '.join(COMPRESS_SCHEMES)}")
    ints = {"act_bits": (act_bits, 2, 16), "exp_bits": (exp_bits, 1, 4),
            "epochs": (epochs, 0, None), "batch_size": (batch_size, 1, None)}
    if scheme == "pool":
        ints.update(pool_size=(pool_size, 2, MAX_COMPRESS_POOL), pool_bits=(pool_bits, 2, 16),
                    lut_bits=(lut_bits, 2, 32))
    for name, (value, lo, hi) in ints.items():
        if not isinstance(value, (int, np.integer)) or value < lo or (hi and value > hi):
            allowed = f"{lo}..{hi}" if hi else f">= {lo}"
            raise ValueError(f"{name} must be an integer {allowed}, not {value!r}")
    if not 0.0 <= k1_target <= 1.0:
        raise ValueError(f"k1_target must be in [0, 1], not {k1_target!r}")
    if lam < 0:
        raise ValueError(f"lam must be >= 0, not {lam!r}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, not {lr!r}")
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


def _mac(kind: str, a: np.ndarray, w: np.ndarray) -> np.ndarray:
    if kind == "conv3x3":
        return golden.conv3x3(a, w)
    return a.reshape(len(a), -1) @ w.T


def compress(float_model: FloatModel, scheme: str, *, x_train: np.ndarray,
             y_train: np.ndarray, x_test: np.ndarray | None = None,
             y_test: np.ndarray | None = None, act_bits: int = 8, exp_bits: int = 3,
             k1_target: float = 0.75, lam: float = 1e-2, epochs: int = 10,
             batch_size: int = 32, lr: float = 5e-4, seed: int = 0,
             progress: bool = True, pool_size: int = 64, pool_bits: int = 8,
             lut_bits: int = 16) -> QuantModel:
    """Compress ``float_model`` into an integer model.

    Parameters
    ----------
    float_model:
        Trained model: MAC layers (each hidden one followed by a ReLU), max-pools,
        and a final MAC layer without ReLU. It is not modified.
    scheme:
        ``"flightnn"`` (1 or 2 power-of-two terms per weight, k per filter),
        ``"lightnn2"`` (2 terms everywhere), ``"int8"`` (int8 weights, power-of-two
        scale per layer) or ``"pool"`` (one network-wide pool of 8-vectors, bit-serial
        lookup; layers whose input channels are not a multiple of 8 stay int8).
    x_train, y_train:
        Fine-tuning and activation calibration data (float inputs, integer labels).
    x_test, y_test:
        Optional; when given, ``meta`` records the float and compressed accuracy.
    act_bits:
        Unsigned activation width; inputs get ``act_bits`` fraction bits.
    exp_bits:
        FLightNN exponent window of ``2**exp_bits`` exponents (ignored for int8).
    k1_target:
        FLightNN: initial share of k = 1 filters in each layer.
    lam:
        FLightNN: weight of the penalty that pushes filters toward k = 1.
    epochs, batch_size, lr, seed:
        Quantization-aware fine-tuning (Adam; ``epochs=0`` skips it).
    progress:
        Show a progress bar while fine-tuning.
    pool_size, pool_bits, lut_bits:
        Weight pools: ``S`` vectors in the pool (2..256), bits of a pool value
        (2..16), bits of a lookup-table entry (2..32; entries are narrowed by a shift
        when ``lut_bits < pool_bits + 3``).

    Returns
    -------
    QuantModel
        Validated; ``meta`` holds the scheme name, hyperparameters, k = 1 shares
        (FLightNN schemes), the pool's storage figures (weight pools) and
        accuracies (if test data was given).

    Raises
    ------
    ValueError
        For an unknown scheme, out-of-range hyperparameters, mis-shaped data, or a
        float model without an integer form.
    """
    _check_args(float_model, scheme, x_train, y_train, x_test, y_test, act_bits, exp_bits,
                k1_target, lam, epochs, batch_size, lr, pool_size, pool_bits, lut_bits)
    structure = _structure(float_model)
    x_train = np.asarray(x_train, dtype=np.float64)
    y_train = np.asarray(y_train)
    model = float_model.copy()

    transform: WeightTransform
    if scheme == "flightnn":
        transform = FLightNNTransform(model, exp_bits, k1_target, lam)
    elif scheme == "lightnn2":
        transform = LightNNTransform(2, exp_bits)
    elif scheme == "pool":
        pooled = pool_layer_indices(model)
        if not pooled:
            raise ValueError("float_model: no conv3x3 or dense layer has input channels in "
                             "multiples of 8, so there is nothing to pool")
        pool = build_pool([model.layers[i].weight for i in pooled], pool_size, pool_bits, seed)
        transform = PoolTransform(pool, pool_bits, pooled, Int8Transform())
    else:
        transform = Int8Transform()
    train(model, x_train, y_train, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
          progress=progress, weight_transform=transform)

    stored = {"int8": "int8", "pool": "pool"}.get(scheme, "flightnn")
    qm = QuantModel(scheme=stored, act_bits=act_bits, input_shape=model.input_shape,
                    input_frac=act_bits, layers=[],
                    exp_bits=exp_bits if stored == "flightnn" else 0)
    if scheme == "pool":
        qm.pool, qm.pool_bits, qm.lut_bits = transform.pool, pool_bits, lut_bits
        lut, lut_k = pool_golden.model_lut(qm)
    a = qm.quantize_input(x_train)
    f_in = act_bits
    k1_layers = []
    for i, kind, relu in structure:
        layer = model.layers[i]
        in_shape = tuple(int(s) for s in a.shape[1:])
        if kind == "maxpool2":
            a = golden.maxpool2(a)  # keeps the fraction bits
            qm.layers.append(Layer("maxpool2", in_shape, tuple(a.shape[1:])))
            continue
        w = layer.weight
        fields: dict = {}
        if scheme == "pool" and i in transform.pool_layers:
            fields["index"], wf = transform.quantize(w)
        elif scheme in ("int8", "pool"):
            w_int, wf = int8_quantize(w)
            fields["weight"] = w_int.astype(np.int8)
        else:
            if scheme == "flightnn":
                _, k = flightnn_quantize(w, transform.thresholds(i), exp_bits)
            else:
                k = np.full(len(w), 2, dtype=np.uint8)
            codes, emin = term_codes(w, k, exp_bits)
            wf = -emin
            fields.update(terms=codes, k=k)
            k1_layers.append(float(np.mean(k == 1)))
        new = Layer(kind, in_shape, (), **fields)
        acc_frac = f_in + wf
        if new.is_pool:
            acc_frac -= lut_k
            mac = pool_golden.pool_mac(new, a, lut, act_bits)
        else:
            mac = _mac(kind, a, new.int_weight)
        bias = round_half_away(layer.bias * 2.0 ** acc_frac)
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

    meta: dict = {
        "scheme": scheme, "act_bits": act_bits, "epochs": epochs, "batch_size": batch_size,
        "lr": lr, "seed": seed, "train_samples": len(x_train),
    }
    if stored == "flightnn":
        meta["exp_bits"] = exp_bits
        n_filters = [len(layer.k) for layer in qm.layers if layer.is_mac]
        meta["k1_share_layers"] = k1_layers
        meta["k1_share"] = float(np.dot(k1_layers, n_filters) / np.sum(n_filters))
    if scheme == "flightnn":
        meta.update(k1_target=k1_target, lam=lam)
    if scheme == "pool":
        meta.update(pool_size=pool_size, pool_bits=pool_bits, lut_bits=lut_bits,
                    lut_shift=lut_k, pool_layers=[i for i, layer in enumerate(qm.layers)
                                                  if layer.is_pool])
    if float_model.meta:
        meta["float_model"] = float_model.meta
    qm.meta = meta
    qm.validate()
    if scheme == "pool":
        meta["storage"] = storage(qm).as_dict()
    if x_test is not None:
        meta["float_accuracy"] = float_model.accuracy(x_test, y_test)
        meta["accuracy"] = evaluate(qm, x_test, y_test)
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
