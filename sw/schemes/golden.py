"""The integer golden model: the specification the RTL must equal bit for bit.

It implements ``docs/arithmetic.md`` and nothing else: int64 numpy throughout, no
floats. :func:`run` evaluates a :class:`~shiftpool.sw.model.file.QuantModel` on integer
inputs; :func:`requantize` and :func:`dot_terms` are the per-block references the
gateware unit tests compare against. Pool layers are evaluated bit-serially by
:mod:`shiftpool.sw.schemes.pool_golden`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..model.file import ModelError, QuantModel
from . import pool_golden

__all__ = ["mac", "requantize", "run", "check_inputs", "conv3x3", "maxpool2", "per_pool_layer",
           "layer_bits", "layer_modes"]


def requantize(v: np.ndarray, shift: int, act_bits: int,
               rounding: str = "half_up") -> np.ndarray:
    """``clip((v + 2**(shift-1)) >> shift, 0, 2**act_bits - 1)``; no rounding term for
    ``shift = 0``. The shift is arithmetic (floor), so halves round up; with
    ``rounding="half_even"`` a value exactly halfway goes to the even neighbour
    (``docs/arithmetic.md`` §6)."""
    v = np.asarray(v, dtype=np.int64)
    if shift > 0:
        q = (v + (1 << (shift - 1))) >> shift
        if rounding == "half_even":
            tie = (v & ((1 << shift) - 1)) == (1 << (shift - 1))
            q = q - (tie & (q & 1 == 1))
        v = q
    return np.clip(v, 0, (1 << act_bits) - 1)


def conv3x3(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``out[n,f,y,x] = sum_{c,ky,kx} w[f,c,ky,kx] * a[n,c,y+ky-1,x+kx-1]`` (zero pad)."""
    n, c, h, wd = a.shape
    pad = np.zeros((n, c, h + 2, wd + 2), dtype=np.int64)
    pad[:, :, 1:-1, 1:-1] = a
    out = np.zeros((n, w.shape[0], h, wd), dtype=np.int64)
    for ky in range(3):
        for kx in range(3):
            window = pad[:, :, ky:ky + h, kx:kx + wd]
            out += np.einsum("nchw,fc->nfhw", window, w[:, :, ky, kx])
    return out


def maxpool2(a: np.ndarray) -> np.ndarray:
    """2x2 max-pool, stride 2; an odd last row or column is dropped."""
    n, c, h, w = a.shape
    a = a[:, :, : h // 2 * 2, : w // 2 * 2]
    return a.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def check_inputs(model: QuantModel, x: np.ndarray) -> np.ndarray:
    """Validate integer inputs: shape ``(N, *input_shape)`` or one sample, range
    ``0 .. 2**act_bits - 1``. Returns them as int64 with the batch axis."""
    x = np.asarray(x)
    shape = tuple(model.input_shape)
    if x.shape == shape:
        x = x[None]
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise ModelError(f"inputs: shape {x.shape} does not match the model input {shape} "
                         f"(expected (N, {', '.join(map(str, shape))}))")
    if not np.issubdtype(x.dtype, np.integer):
        raise ModelError(f"inputs: dtype {x.dtype} is not integer; quantize float inputs with "
                         f"q = clip(round(x * 2**{model.input_frac}), 0, "
                         f"{(1 << model.act_bits) - 1})")
    hi = (1 << model.act_bits) - 1
    if x.size and (x.min() < 0 or x.max() > hi):
        raise ModelError(f"inputs: values must be in 0..{hi} (act_bits={model.act_bits}), "
                         f"found {x.min()}..{x.max()}")
    return x.astype(np.int64)


def per_pool_layer(model: QuantModel, value, name: str, default, check) -> dict:
    """``{layer index: setting}`` for every pool layer from one value or a mapping."""
    pool_layers = [i for i, layer in enumerate(model.layers) if layer.is_pool]
    if value is None:
        return dict.fromkeys(pool_layers, default)
    if not isinstance(value, Mapping):
        if not pool_layers:
            raise ModelError(f"{name}: the model has no pool layers; {name} applies to pool "
                             f"layers only")
        value = dict.fromkeys(pool_layers, value)
    out = dict.fromkeys(pool_layers, default)
    for i, setting in value.items():
        if i not in out:
            raise ModelError(f"layer {i}: field {name!r}: only pool layers take a {name} "
                             f"setting (pool layers: {pool_layers})")
        out[i] = check(setting, f"layer {i}")
    return out


def layer_bits(model: QuantModel, bits: int | Mapping[int, int] | None) -> dict:
    """``{pool layer index: bit-planes it processes}`` for a run-time precision given
    as :func:`run` takes it; checked (1..``act_bits``)."""
    act_bits = model.act_bits
    return per_pool_layer(model, bits, "bits", act_bits,
                          lambda b, where: pool_golden.check_bits(b, act_bits, where))


def layer_modes(model: QuantModel, mode: str | Mapping[int, str] = "direct") -> dict:
    """``{pool layer index: "direct" or "precompute"}`` for a mode given as :func:`run`
    takes it; checked."""
    return per_pool_layer(model, None if mode == "direct" else mode, "mode", "direct",
                          _check_mode)


def _check_mode(mode, where: str) -> str:
    if mode not in pool_golden.MODES:
        raise ModelError(f"{where}: field 'mode': {mode!r} is unknown; allowed: "
                         f"{', '.join(pool_golden.MODES)}")
    return mode


def mac(layer, a: np.ndarray) -> np.ndarray:
    """Dot products of a conv3x3 or dense layer's integer weights (``int_weight``)
    with integer activations ``a``, without the bias (int64)."""
    w = layer.int_weight
    if layer.kind == "conv3x3":
        return conv3x3(a, w)
    # An explicit width: reshape(0, -1) fails on an empty batch.
    return a.reshape(len(a), w.shape[1]) @ w.T


def run(model: QuantModel, x: np.ndarray, trace: bool = False,
        bits: int | Mapping[int, int] | None = None,
        mode: str | Mapping[int, str] = "direct"):
    """Evaluate ``model`` on integer inputs ``x`` (``(N, C, H, W)`` or one sample).

    Parameters
    ----------
    model, x:
        The model and its integer inputs.
    trace:
        Also return every layer's output.
    bits:
        Pool models only: run-time precision, the number of activation bit-planes a
        pool layer processes (1..``act_bits``, the top ones); one value for every
        pool layer or ``{layer index: bits}``. ``None``: all planes.
    mode:
        Pool models only: ``"direct"`` or ``"precompute"`` (bit-identical), for every
        pool layer or per layer index.

    Returns
    -------
    The final layer's accumulators plus bias, int64 ``(N, classes)``; with
    ``trace=True`` also the list of every layer's output (the input first).
    """
    a = check_inputs(model, x)
    act_bits = model.act_bits
    planes = layer_bits(model, bits)
    layer_mode = layer_modes(model, mode)
    lut = pool_golden.model_lut(model)[0] if planes else None
    outputs = [a]
    for i, layer in enumerate(model.layers):
        if layer.kind == "maxpool2":
            a = maxpool2(a)
        else:
            if layer.is_pool:
                v = pool_golden.pool_mac(layer, a, lut, act_bits, planes[i], layer_mode[i])
            else:
                v = mac(layer, a)
            v = v + (layer.bias.astype(np.int64)[None, :, None, None] if layer.kind == "conv3x3"
                     else layer.bias.astype(np.int64)[None, :])
            a = (requantize(v, int(layer.shift), act_bits, model.rounding) if layer.relu
                 else v)
        outputs.append(a)
    return (a, outputs) if trace else a
