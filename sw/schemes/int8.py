"""The int8 baseline: symmetric per-layer int8 weights with a power-of-two scale, the
scheme a user would otherwise pick; every figure of the other schemes is shown beside
it. Also the int8 path of the weight-pool scheme's layers that are not pooled."""

from __future__ import annotations

import numpy as np

from ..train.nn import WeightTransform
from .registry import Quantizer, Scheme, register

__all__ = ["INT8", "Int8Quantizer", "Int8Transform", "int8_frac", "int8_quantize",
           "round_half_away"]


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


class Int8Quantizer(Quantizer):
    """Every MAC layer's weights as int8 (:func:`int8_quantize`)."""

    def __init__(self, model, options, seed):
        super().__init__(model, options, seed)
        self.transform = Int8Transform()

    def integerize(self, index, weight):
        w_int, wf = int8_quantize(weight)
        return {"weight": w_int.astype(np.int8)}, wf


INT8 = register(Scheme(
    name="int8", summary="int8 weights, power-of-two scale per layer (the baseline)",
    stored_as="int8", engine="int8", options=(), quantizer=Int8Quantizer))
