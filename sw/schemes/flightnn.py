"""FLightNN quantizers: weights as one or two signed powers of two per filter.

Reconstruction of Ding et al., "FLightNNs" (DAC 2019) as written in SEEDS.md section
1. Per MAC layer the exponents live in a window of ``2**exp_bits`` values
``emin .. emax``, with ``emax`` the exponent of ``R(max|w|)`` of the layer and
``emin = emax - (2**exp_bits - 1)``.

- :func:`pow2_round` is ``R``; :func:`lightnn` is LightNN-k (k = 1 or 2 terms).
- :func:`flightnn_quantize` picks k per filter (output channel) with thresholds
  ``t_i`` on the residual norm ``r_i = ||w_i - R(w_i)||_2``: k = 2 iff ``r_i > t_i``.
- :class:`FLightNNTransform` fine-tunes the latent weights (straight-through) and
  the thresholds (sigmoid surrogate of the indicator, plus a penalty that pushes
  filters toward k = 1). Both transforms fix each layer's exponent window when
  fine-tuning starts (:func:`frozen_windows`).
- :func:`term_codes` turns the result into the model file's term codes.
"""

from __future__ import annotations

import numpy as np

from ..train.nn import FloatModel, WeightTransform
from .registry import Option, Quantizer, Scheme, register

__all__ = [
    "FLIGHTNN", "LIGHTNN2", "FLightNNQuantizer", "LightNN2Quantizer",
    "exponent_window", "layer_emax", "pow2_round", "lightnn", "residual_norms",
    "thresholds_for_share", "flightnn_quantize", "term_codes", "frozen_windows",
    "FLightNNTransform", "LightNNTransform",
]


def exponent_window(emax: int, exp_bits: int) -> tuple[int, int]:
    """``(emin, emax)``: the ``2**exp_bits`` exponents a layer's terms may use."""
    if not 1 <= exp_bits <= 8:
        raise ValueError(f"exp_bits must be in 1..8, not {exp_bits}")
    return int(emax) - ((1 << exp_bits) - 1), int(emax)


def _round_exponent(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sign(x), round(log2|x|))``; the exponent of a zero is 0 (its sign is 0).

    Rounding is half up in the log domain (``floor(log2|x| + 0.5)``), so the cut
    between ``2**e`` and ``2**(e+1)`` is their geometric mean.
    """
    x = np.asarray(x, dtype=np.float64)
    mag = np.abs(x)
    # Substitute 1 for zeros so log2 never sees 0 (warnings are errors in the tests).
    safe = np.where(mag > 0, mag, 1.0)
    return np.sign(x), np.floor(np.log2(safe) + 0.5).astype(np.int64)


def layer_emax(w: np.ndarray) -> int:
    """Exponent of ``R(max|w|)``: the top of a layer's window (0 for all-zero ``w``)."""
    peak = float(np.max(np.abs(w), initial=0.0))
    if peak == 0.0:
        return 0
    return int(_round_exponent(np.array(peak))[1])


def _split(x: np.ndarray, emax: int, exp_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Sign (0 where flushed) and windowed exponent of ``R(x)``."""
    emin, emax = exponent_window(emax, exp_bits)
    sign, e = _round_exponent(x)
    e = np.minimum(e, emax)
    sign = np.where(e < emin, 0.0, sign)
    return sign, np.maximum(e, emin)


def pow2_round(x: np.ndarray, emax: int, exp_bits: int) -> np.ndarray:
    """``R(x) = sign(x) * 2**round(log2|x|)`` in the window ``emin .. emax``.

    Exponents above ``emax`` are clipped to ``emax``. Values whose rounded exponent
    falls below ``emin = emax - (2**exp_bits - 1)`` flush to 0 rather than clip up to
    ``2**emin``: a tiny weight is closer to 0 than to ``2**emin`` and 0 costs no
    shift. Zero stays 0. Rounding is half up in the log domain.

    Parameters
    ----------
    x:
        Values to round.
    emax:
        Top exponent of the window.
    exp_bits:
        The window holds ``2**exp_bits`` exponents.
    """
    sign, e = _split(x, emax, exp_bits)
    return sign * np.exp2(e.astype(np.float64))


def lightnn(w: np.ndarray, k: int, exp_bits: int, emax: int | None = None) -> np.ndarray:
    """LightNN-k: ``Q1 = R(w)``; ``Q2 = Q1 + R(w - Q1)``, both in the same window.

    ``emax`` defaults to :func:`layer_emax` of ``w``.
    """
    if k not in (1, 2):
        raise ValueError(f"k must be 1 or 2, not {k}")
    emax = layer_emax(w) if emax is None else emax
    q = pow2_round(w, emax, exp_bits)
    if k == 2:
        q = q + pow2_round(w - q, emax, exp_bits)
    return q


def residual_norms(w: np.ndarray, exp_bits: int, emax: int | None = None) -> np.ndarray:
    """Per filter (axis 0) ``||w_i - R(w_i)||_2``: what a second term would fix."""
    emax = layer_emax(w) if emax is None else emax
    res = w - pow2_round(w, emax, exp_bits)
    return np.sqrt((res.reshape(len(w), -1) ** 2).sum(axis=1))


def thresholds_for_share(r: np.ndarray, k1_share: float) -> float:
    """A threshold ``t`` with ``round(k1_share * len(r))`` of ``r`` at or below it.

    Filters with ``r_i <= t`` get k = 1. The threshold sits midway between the two
    order statistics it separates, so small changes of ``r`` do not flip filters;
    for share 0 it is -1 (below every norm), for share 1 the largest norm.
    """
    if not 0.0 <= k1_share <= 1.0:
        raise ValueError(f"k1_share must be in [0, 1], not {k1_share}")
    r = np.sort(np.asarray(r, dtype=np.float64))
    n1 = int(round(k1_share * len(r)))
    if n1 == 0:
        return -1.0
    if n1 == len(r):
        return float(r[-1])
    return float(0.5 * (r[n1 - 1] + r[n1]))


def flightnn_quantize(w: np.ndarray, t: np.ndarray | float, exp_bits: int,
                      emax: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """FLightNN weights ``R(w_i) + 1[r_i > t_i] * R(w_i - R(w_i))`` per filter i.

    Returns
    -------
    wq, k:
        The quantized weights and the terms per filter (uint8, 1 or 2).
    """
    emax = layer_emax(w) if emax is None else emax
    q1 = pow2_round(w, emax, exp_bits)
    q2 = pow2_round(w - q1, emax, exp_bits)
    r = np.sqrt(((w - q1).reshape(len(w), -1) ** 2).sum(axis=1))
    two = r > np.broadcast_to(np.asarray(t, dtype=np.float64), r.shape)
    wq = q1 + _per_filter(two, w.ndim) * q2
    return wq, np.where(two, 2, 1).astype(np.uint8)


def term_codes(w: np.ndarray, k: np.ndarray, exp_bits: int,
               emax: int | None = None) -> tuple[np.ndarray, int]:
    """Model-file term codes of ``w`` with ``k`` terms per filter.

    A code is 0 (zero) or ``+-(e + 1)`` for ``+-2**(emin + e)``, ``e`` in
    ``0 .. 2**exp_bits - 1``; the integer weight is at scale ``2**emin``.

    Returns
    -------
    codes, emin:
        int8 ``[2, *w.shape]`` (k = 1 filters have an all-zero second term) and the
        window bottom, so ``wf = -emin``.
    """
    if not 1 <= exp_bits <= 6:
        # Codes reach +-2**exp_bits and are stored as int8.
        raise ValueError(f"term codes need exp_bits in 1..6, not {exp_bits}")
    emax = layer_emax(w) if emax is None else emax
    emin, _ = exponent_window(emax, exp_bits)
    s1, e1 = _split(w, emax, exp_bits)
    q1 = s1 * np.exp2(e1.astype(np.float64))
    s2, e2 = _split(w - q1, emax, exp_bits)
    s2 = s2 * _per_filter(np.asarray(k) == 2, w.ndim)
    codes = np.stack([s1 * (e1 - emin + 1), s2 * (e2 - emin + 1)])
    return codes.astype(np.int8), emin


def _per_filter(v: np.ndarray, ndim: int) -> np.ndarray:
    """Broadcast a per-filter vector over the remaining weight axes."""
    return np.asarray(v, dtype=np.float64).reshape((-1,) + (1,) * (ndim - 1))


def frozen_windows(model: FloatModel) -> dict[int, int]:
    """``{layer index: emax}`` of every MAC layer of ``model``, taken once.

    Fine-tuning keeps each layer's window where the float model puts it. Were
    ``emax`` recomputed from the latent weights at every step, one weight growing
    past a rounding cut would move the whole layer's window up: with a small window
    (E = 2) the bottom exponent then flushes a large part of the layer's weights to
    0, every residual norm jumps (by 1.5x on the MNIST MLP) and every filter goes to
    k = 2. A weight that grows past ``2**emax`` clips to it instead.
    """
    return {i: layer_emax(layer.weight) for i, layer in enumerate(model.layers)
            if layer.kind in ("conv3x3", "dense")}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # tanh form: no overflow warning for large |z|.
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class LightNNTransform(WeightTransform):
    """LightNN-k on every MAC layer, straight-through gradient to the latent weights.

    Parameters
    ----------
    k:
        Terms per weight (1 or 2).
    exp_bits:
        Exponent window size ``2**exp_bits``.
    model:
        When given, each layer's window is fixed to the one of ``model``'s weights
        (:func:`frozen_windows`); otherwise it follows the weights it is applied to.
    """

    def __init__(self, k: int, exp_bits: int, model: FloatModel | None = None) -> None:
        lightnn(np.zeros(1), k, exp_bits)  # validates k and exp_bits
        self.k, self.exp_bits = k, exp_bits
        self.emax = frozen_windows(model) if model is not None else {}

    def __call__(self, index: int, weight: np.ndarray) -> np.ndarray:
        return lightnn(weight, self.k, self.exp_bits, self.emax.get(index))


class FLightNNTransform(WeightTransform):
    """FLightNN fine-tuning: per-filter k with trainable thresholds.

    Forward: ``w~_i = R(w_i) + 1[r_i > t_i] * R(w_i - R(w_i))`` in each layer's
    window as the model had it at construction (:func:`frozen_windows`). Backward:
    straight through to the latent weights; for the thresholds the hard indicator's derivative is
    replaced by that of ``sigmoid((r_i - t_i) / tau)``. The penalty
    ``lam * sum_i sigmoid((r_i - t_i) / tau)`` (a soft count of k = 2 filters)
    pushes thresholds up, i.e. filters toward k = 1; only the thresholds receive
    its gradient.

    Thresholds are trained in units of a per-layer scale (the median residual norm
    at construction), so one optimizer step size suits every layer; ``tau`` is
    ``tau_rel`` in the same units.

    Parameters
    ----------
    model:
        The model whose MAC layers are quantized (read at construction only).
    exp_bits:
        Exponent window size ``2**exp_bits``.
    k1_target:
        Initial share of k = 1 filters in each layer (thresholds start at the
        matching quantile of the residual norms).
    lam:
        Penalty weight; larger means more k = 1 filters.
    tau_rel:
        Surrogate temperature relative to the layer scale.
    """

    def __init__(self, model: FloatModel, exp_bits: int, k1_target: float, lam: float,
                 tau_rel: float = 0.25) -> None:
        if lam < 0:
            raise ValueError(f"lam must be >= 0, not {lam}")
        if tau_rel <= 0:
            raise ValueError(f"tau_rel must be > 0, not {tau_rel}")
        self.exp_bits, self.lam, self.tau_rel = exp_bits, float(lam), float(tau_rel)
        self.scale: dict[int, float] = {}
        self.theta: dict[int, np.ndarray] = {}
        self._grad: dict[int, np.ndarray] = {}
        self._cache: dict[int, tuple] = {}
        self.emax = frozen_windows(model)
        for i in self.emax:
            r = residual_norms(model.layers[i].weight, exp_bits, self.emax[i])
            med = float(np.median(r))
            self.scale[i] = med if med > 0 else 1.0
            t = thresholds_for_share(r, k1_target)
            self.theta[i] = np.full(len(r), t / self.scale[i])
            self._grad[i] = np.zeros(len(r))

    def thresholds(self, index: int) -> np.ndarray:
        """Current thresholds ``t_i`` of MAC layer ``index`` (absolute units)."""
        return self.theta[index] * self.scale[index]

    def __call__(self, index: int, weight: np.ndarray) -> np.ndarray:
        emax = self.emax[index]
        q1 = pow2_round(weight, emax, self.exp_bits)
        q2 = pow2_round(weight - q1, emax, self.exp_bits)
        r = np.sqrt(((weight - q1).reshape(len(weight), -1) ** 2).sum(axis=1))
        z = (r / self.scale[index] - self.theta[index]) / self.tau_rel
        s = _sigmoid(z)
        # d sigmoid(z) / d theta, the surrogate for d 1[r > t] / d theta.
        dind = -s * (1.0 - s) / self.tau_rel
        self._cache[index] = (q2, dind, float(self.lam * s.sum()))
        self._grad[index] = self.lam * dind  # penalty part; backward adds the loss part
        two = r > self.thresholds(index)
        return q1 + _per_filter(two, weight.ndim) * q2

    def backward(self, index: int, grad: np.ndarray) -> np.ndarray:
        q2, dind, _ = self._cache[index]
        # dL/d indicator_i = sum_j dL/dw~_ij * R(w_ij - R(w_ij)).
        dl_dind = (grad * q2).reshape(len(grad), -1).sum(axis=1)
        self._grad[index] = self._grad[index] + dl_dind * dind
        return grad

    def params(self) -> list[np.ndarray]:
        return [self.theta[i] for i in sorted(self.theta)]

    def grads(self) -> list[np.ndarray]:
        return [self._grad[i] for i in sorted(self.theta)]

    def penalty(self) -> float:
        return sum(c[2] for c in self._cache.values())


# -- the schemes -----------------------------------------------------------------------

_EXP_BITS = Option("exp_bits", int, 3, 1, 4, "FLightNN exponent window: 2**E exponents per "
                   "layer")


class FLightNNQuantizer(Quantizer):
    """FLightNN: k per filter from the fine-tuned thresholds (:func:`flightnn_quantize`),
    weights as term codes (:func:`term_codes`)."""

    def __init__(self, model, options, seed):
        super().__init__(model, options, seed)
        self.exp_bits = self.options["exp_bits"]
        self.transform = self.make_transform(model)
        self.k1_layers: list[float] = []

    def make_transform(self, model) -> WeightTransform:
        return FLightNNTransform(model, self.exp_bits, self.options["k1_target"],
                                 self.options["lam"])

    def filter_terms(self, index: int, weight: np.ndarray) -> np.ndarray:
        """k (1 or 2) of every filter of layer ``index``."""
        return flightnn_quantize(weight, self.transform.thresholds(index), self.exp_bits,
                                 self.transform.emax[index])[1]

    def model_fields(self):
        return {"exp_bits": self.exp_bits}

    def integerize(self, index, weight):
        k = self.filter_terms(index, weight)
        codes, emin = term_codes(weight, k, self.exp_bits, self.transform.emax[index])
        self.k1_layers.append(float(np.mean(k == 1)))
        return {"terms": codes, "k": k}, -emin

    def meta(self, qm):
        filters = [len(layer.k) for layer in qm.layers if layer.is_mac]
        return {"k1_share_layers": self.k1_layers,
                "k1_share": float(np.dot(self.k1_layers, filters) / np.sum(filters))}


class LightNN2Quantizer(FLightNNQuantizer):
    """LightNN-2: two terms in every filter, for comparison with FLightNN."""

    def make_transform(self, model) -> WeightTransform:
        return LightNNTransform(2, self.exp_bits, model)

    def filter_terms(self, index, weight):
        return np.full(len(weight), 2, dtype=np.uint8)


FLIGHTNN = register(Scheme(
    name="flightnn", summary="FLightNN: each weight 1 or 2 signed powers of two, k per filter",
    stored_as="flightnn", engine="shiftadd", quantizer=FLightNNQuantizer, options=(
        _EXP_BITS,
        Option("k1_target", float, 0.75, 0.0, 1.0, "FLightNN: initial share of k=1 filters"),
        Option("lam", float, 1e-2, 0.0, None, "FLightNN: penalty weight pushing filters to "
               "k=1"),
    ), sweep=tuple((f"k1={t}", {"k1_target": t}) for t in (0.5, 0.9))))

LIGHTNN2 = register(Scheme(
    name="lightnn2", summary="LightNN-2: FLightNN with k=2 in every filter (for comparison)",
    stored_as="flightnn", engine="shiftadd", quantizer=LightNN2Quantizer, options=(_EXP_BITS,)))
