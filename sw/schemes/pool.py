"""Weight-pool compression (Li & Gupta, "Bit-serial Weight Pools", MLSys 2022).

SEEDS.md §2 and ``docs/arithmetic.md`` §12 say what the integers mean; this module
chooses them:

- :func:`to_vectors` cuts a layer's weights into 8-vectors along the input-channel
  axis (conv3x3 ``[Co, Ci, 3, 3]``: channels ``8g .. 8g+7`` at a fixed ``(f, ky, kx)``;
  dense ``[Co, N]``: inputs ``8g .. 8g+7``). Layers whose axis is not a multiple of 8
  are not pooled (:func:`poolable`); they stay int8.
- :func:`build_pool` clusters the vectors of every pooled layer into one pool of
  ``S`` vectors (scikit-learn k-means on L2-normalized vectors) and quantizes it to
  signed ``pool_bits``-bit integers.
- :func:`assign` replaces each vector by its most cosine-similar pool vector;
  :func:`fit_scale` picks the layer's power-of-two scale (there is no per-vector
  scale and no batch-norm to absorb one).
- :class:`PoolTransform` fine-tunes the latent float weights through that
  projection (straight-through), and the pool values with them.
- :func:`storage` counts the bits streamed and held on chip, beside the paper's
  compression formula (:func:`paper_compression`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.cluster import KMeans

from ..model.file import GROUP, QuantModel, group_axis, pool_weight
from ..train.nn import FloatModel, WeightTransform
from . import pool_golden
from .int8 import Int8Quantizer, Int8Transform
from .pool_golden import POOL_TABLES, table_entries
from .registry import Option, Scheme, register

__all__ = ["POOL", "PoolQuantizer", "poolable", "pool_layer_indices", "to_vectors",
           "index_shape", "cosine_assign", "assign", "fit_scale", "quantize_pool", "build_pool",
           "PoolTransform",
           "PoolStorage", "storage", "paper_compression", "index_width", "WeightStorage",
           "image_storage"]


def poolable(kind: str, in_shape: tuple) -> bool:
    """Whether a MAC layer's grouping axis (conv input channels, dense inputs) is a
    multiple of 8, so it can be cut into 8-vectors."""
    return kind in ("conv3x3", "dense") and group_axis(kind, in_shape) % GROUP == 0


def pool_layer_indices(model: FloatModel) -> list[int]:
    """Indices (in ``model.layers``) of the MAC layers that can be pooled."""
    shapes = model.shapes()
    return [i for i, layer in enumerate(model.layers) if poolable(layer.kind, shapes[i])]


def to_vectors(w: np.ndarray) -> np.ndarray:
    """``[n, 8]`` vectors of a conv3x3 ``[Co, Ci, 3, 3]`` or dense ``[Co, N]`` weight,
    in the order of the index array ``[Co, Ci/8(, 3, 3)]`` (C order)."""
    w = np.asarray(w)
    if w.shape[1] % GROUP:
        raise ValueError(f"weight of shape {w.shape}: axis 1 ({w.shape[1]}) is not a "
                         f"multiple of {GROUP}")
    if w.ndim == 4:
        co, ci = w.shape[:2]
        w = w.reshape(co, ci // GROUP, GROUP, 3, 3).transpose(0, 1, 3, 4, 2)
    return w.reshape(-1, GROUP)


def index_shape(weight_shape: tuple) -> tuple:
    """Shape of the index array of a weight: ``(Co, Ci/8, 3, 3)`` or ``(Co, N/8)``."""
    return (weight_shape[0], weight_shape[1] // GROUP, *weight_shape[2:])


def cosine_assign(vectors: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Index of the most cosine-similar pool vector for each row of ``vectors``.

    ``argmax_p (v . P[p]) / (|v| |P[p]|)``; ties go to the lowest index, so an
    all-zero ``v`` (similarity 0 to everything) gets index 0 and an all-zero pool
    vector (similarity 0) is chosen only when no other is positive. int64 ``[n]``.
    """
    pool = np.asarray(pool, dtype=np.float64)
    norms = np.linalg.norm(pool, axis=1)
    # |v| is the same for every p, so it does not change the argmax.
    unit = pool / np.where(norms > 0, norms, 1.0)[:, None]
    sims = np.asarray(vectors, dtype=np.float64) @ unit.T
    return sims.argmax(axis=1).astype(np.int64)


def assign(w: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Pool indices of a layer's weights (:func:`cosine_assign` of its 8-vectors),
    shaped ``[Co, Ci/8(, 3, 3)]``."""
    return cosine_assign(to_vectors(w), pool).reshape(index_shape(np.shape(w)))


def fit_scale(w: np.ndarray, q: np.ndarray) -> int:
    """Power-of-two layer scale: ``wf`` with ``w ~= q * 2**-wf``.

    ``alpha = <w, q> / <q, q>`` (least squares; ``|w| / |q|`` if that is not
    positive), ``wf = -floor(log2(alpha) + 0.5)`` (nearest power of two in the log
    domain). 0 if ``w`` or ``q`` is all zero.
    """
    w = np.asarray(w, dtype=np.float64).ravel()
    q = np.asarray(q, dtype=np.float64).ravel()
    qq, wq = float(q @ q), float(w @ q)
    if qq == 0.0 or not np.any(w):
        return 0
    alpha = wq / qq if wq > 0 else float(np.linalg.norm(w) / np.sqrt(qq))
    return -int(np.floor(np.log2(alpha) + 0.5))


def quantize_pool(pool: np.ndarray, pool_bits: int) -> np.ndarray:
    """Float pool -> signed integers in ``±(2**(pool_bits-1) - 1)``, max-abs scaling.

    ``P_int = round_half_away(P * (2**(pool_bits-1) - 1) / max|P|)``. The pool's own
    scale is free (every layer fits its power-of-two scale to the integer pool), so
    the largest entry uses the full range. int64 ``[S, 8]``.
    """
    if not 2 <= pool_bits <= 16:
        raise ValueError(f"pool_bits must be in 2..16, not {pool_bits!r}")
    pool = np.asarray(pool, dtype=np.float64)
    peak = float(np.max(np.abs(pool), initial=0.0))
    if peak == 0.0:
        return np.zeros(pool.shape, dtype=np.int64)
    x = pool * (((1 << (pool_bits - 1)) - 1) / peak)
    return (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.int64)


def build_pool(weights: list[np.ndarray], pool_size: int, pool_bits: int,
               seed: int = 0) -> np.ndarray:
    """One pool of ``pool_size`` 8-vectors shared by the layers whose ``weights`` are
    given, quantized to ``pool_bits``-bit signed integers.

    1. Each layer's vectors are divided by the layer's RMS vector norm, so layers of
       different magnitude share the pool on an equal footing.
    2. The non-zero vectors are L2-normalized and clustered with scikit-learn's
       ``KMeans`` (k-means++, ``n_init=4``, ``random_state=seed``), each weighted by its
       squared norm (the error a wrong direction costs grows with it). On unit vectors
       ``|u - c|**2 = 2 - 2 cos(u, c)`` for a unit ``c``: this is spherical k-means,
       approximated because scikit-learn does not renormalize the centres between
       iterations (they are means of unit vectors, of norm <= 1).
    3. Pool vector ``c`` = the unit direction of centre ``c`` times the mean
       projection of its members on it (the least-squares magnitude).
    4. :func:`quantize_pool`.

    If there are fewer distinct directions than ``pool_size``, only that many
    clusters are formed and the other pool vectors are zero.

    Returns
    -------
    np.ndarray
        int64 ``[pool_size, 8]``.
    """
    units, sq = [], []
    for w in weights:
        v = to_vectors(np.asarray(w, dtype=np.float64))
        norms = np.linalg.norm(v, axis=1)
        rms = float(np.sqrt(np.mean(norms ** 2))) if len(v) else 0.0
        if rms == 0.0:
            continue
        keep = norms > 0
        units.append(v[keep] / rms)
        sq.append((norms[keep] / rms) ** 2)
    if not units:
        raise ValueError("build_pool: the pooled layers have no non-zero weight vector")
    u = np.concatenate(units)
    weight = np.concatenate(sq)
    dirs = u / np.linalg.norm(u, axis=1, keepdims=True)
    # Fewer clusters than distinct points, or scikit-learn warns (warnings are errors).
    clusters = min(pool_size, len(np.unique(dirs.round(12), axis=0)))
    km = KMeans(n_clusters=clusters, n_init=4, random_state=seed).fit(dirs, sample_weight=weight)
    centres = km.cluster_centers_
    cn = np.linalg.norm(centres, axis=1, keepdims=True)
    d = centres / np.where(cn > 0, cn, 1.0)
    proj = np.einsum("ij,ij->i", u, d[km.labels_])
    # Every cluster has a member, so the counts are positive.
    mag = (np.bincount(km.labels_, weights=proj, minlength=clusters)
           / np.bincount(km.labels_, minlength=clusters))
    pool = np.zeros((pool_size, GROUP))
    pool[:clusters] = d * np.maximum(mag, 0.0)[:, None]
    return quantize_pool(pool, pool_bits)


#: Largest latent pool value at the start of fine-tuning. Only the pool's direction
#: and relative sizes matter (it is re-quantized by max-abs scaling every step), but
#: Adam's steps are about ``lr`` in absolute terms: at 0.1 the pool moves about as
#: fast relative to its size as the weights do. On the digits model (S = 32..128,
#: 10 epochs) 0.1 gave 1-7 points more accuracy than 1.0 and was no worse than 0.03.
LATENT_PEAK = 0.1


class PoolTransform(WeightTransform):
    """Quantization-aware fine-tuning through a shared pool.

    Forward, for a pooled layer: every 8-vector of the latent weights is replaced by
    its most cosine-similar vector of the integer pool (re-chosen at every step) and
    the layer is scaled by its power-of-two :func:`fit_scale`. Other MAC layers go
    through ``fallback`` (int8). Backward: straight through to the latent weights.

    With ``train_pool`` the pool is trained too: it is kept as latent floats, the
    forward pass uses ``quantize_pool`` of them, and each pool vector receives the
    sum of the gradients of the weight vectors that use it (times their layer's
    ``2**-wf`` and the quantizer's scale; straight through the rounding).

    Parameters
    ----------
    pool:
        Integer pool ``[S, 8]`` (from :func:`build_pool`).
    pool_bits:
        Width of the integer pool values.
    pool_layers:
        Indices of the layers (in the float model) that are pooled.
    fallback:
        Transform of the layers that are not pooled.
    train_pool:
        Also train the pool values.
    """

    def __init__(self, pool: np.ndarray, pool_bits: int, pool_layers: list[int],
                 fallback: WeightTransform, train_pool: bool = True) -> None:
        top = (1 << (pool_bits - 1)) - 1
        self.latent = np.asarray(pool, dtype=np.float64) * (LATENT_PEAK / top)
        self.pool_bits = pool_bits
        self.pool_layers = set(pool_layers)
        self.fallback = fallback
        self.train_pool = train_pool
        self._grad = np.zeros_like(self.latent)
        self._cache: dict[int, tuple[np.ndarray, int]] = {}

    @property
    def pool(self) -> np.ndarray:
        """The integer pool the forward pass uses now."""
        return quantize_pool(self.latent, self.pool_bits)

    def quantize(self, weight: np.ndarray) -> tuple[np.ndarray, int]:
        """``(index, wf)`` of a pooled layer's latent weights against :attr:`pool`."""
        pool = self.pool
        index = assign(weight, pool)
        return index, fit_scale(weight, pool_weight(index, pool))

    def __call__(self, index: int, weight: np.ndarray) -> np.ndarray:
        if index not in self.pool_layers:
            return self.fallback(index, weight)
        if index == min(self.pool_layers):
            self._grad = np.zeros_like(self.latent)  # a new forward pass starts
        idx, wf = self.quantize(weight)
        self._cache[index] = (idx, wf)
        return pool_weight(idx, self.pool) * 2.0 ** -wf

    def backward(self, index: int, grad: np.ndarray) -> np.ndarray:
        if index in self.pool_layers and self.train_pool:
            idx, wf = self._cache[index]
            peak = float(np.max(np.abs(self.latent), initial=0.0))
            gain = ((1 << (self.pool_bits - 1)) - 1) / peak if peak > 0 else 0.0
            per_vector = to_vectors(grad) * (2.0 ** -wf * gain)
            np.add.at(self._grad, idx.ravel(), per_vector)
        return grad

    def params(self) -> list[np.ndarray]:
        return [self.latent] if self.train_pool else []

    def grads(self) -> list[np.ndarray]:
        return [self._grad] if self.train_pool else []


# -- storage accounting ---------------------------------------------------------------


def index_width(pool_size: int) -> int:
    """Bits of one packed pool index: ``ceil(log2 S)`` (at least 1)."""
    return max(1, (int(pool_size) - 1).bit_length())


def paper_compression(weights: int, pool_size: int, lut_bits: int, weight_bits: int = 8,
                      group: int = GROUP) -> float:
    """The paper's ``CR = W*B_w / (W/N * log2 S + 2**N * S * B_l)``."""
    return weights * weight_bits / (weights / group * np.log2(pool_size)
                                    + (1 << group) * pool_size * lut_bits)


@dataclasses.dataclass(frozen=True)
class WeightStorage:
    """Weight bits of a pool model (biases not counted), by kind, and their totals.

    ``streamed`` is what crosses the link when the LUT is built on chip from the
    pool at load time (indices + pool + the int8 layers' weights); ``onchip`` is
    what the accelerator holds while running (indices + LUT + int8 weights; the
    pool is not kept).
    """

    weights: int
    index_storage: int
    pool_storage: int
    lut_storage: int
    int8_storage: int

    @property
    def streamed(self) -> int:
        return self.index_storage + self.pool_storage + self.int8_storage

    @property
    def onchip(self) -> int:
        return self.index_storage + self.lut_storage + self.int8_storage

    @property
    def streamed_per_weight(self) -> float:
        """Streamed bits per weight of the whole model."""
        return self.streamed / self.weights

    @property
    def onchip_per_weight(self) -> float:
        return self.onchip / self.weights


@dataclasses.dataclass(frozen=True)
class PoolStorage(WeightStorage):
    """:class:`WeightStorage` of a pool model counted from the model itself (packed
    widths, no padding), with the pool's shape; ``paper_cr`` is the paper's formula
    over the pooled weights.
    """

    pool_size: int
    pool_bits: int
    lut_bits: int
    pooled_weights: int
    pool_table: str = "full"

    @property
    def pooled_streamed_per_weight(self) -> float:
        """(indices + pool) / pooled weights: the pooled layers alone."""
        return (self.index_storage + self.pool_storage) / self.pooled_weights

    @property
    def pooled_onchip_per_weight(self) -> float:
        return (self.index_storage + self.lut_storage) / self.pooled_weights

    @property
    def paper_cr(self) -> float:
        return paper_compression(self.pooled_weights, self.pool_size, self.lut_bits)

    def as_dict(self) -> dict:
        """Fields and derived figures, JSON-able."""
        out = dataclasses.asdict(self)
        for name in ("streamed", "onchip", "streamed_per_weight", "onchip_per_weight",
                     "pooled_streamed_per_weight", "pooled_onchip_per_weight", "paper_cr"):
            out[name] = getattr(self, name)
        return out


def storage(model: QuantModel) -> PoolStorage:
    """Count the weight bits of a pool model (see :class:`PoolStorage`).

    Indices are packed at :func:`index_width` bits, pool entries at ``pool_bits``,
    LUT entries (``256 * S``, or ``2 * 16 * S`` for half tables) at ``lut_bits``, int8
    weights at 8 bits.
    """
    if model.scheme != "pool":
        raise ValueError(f"storage: scheme {model.scheme!r} is not 'pool'")
    size = len(model.pool)
    weights = pooled = vectors = int8 = 0
    for layer in model.layers:
        if not layer.is_mac:
            continue
        n = len(layer.bias) * layer.fan_in
        weights += n
        if layer.is_pool:
            pooled += n
            vectors += int(np.asarray(layer.index).size)
        else:
            int8 += n
    if pooled == 0:
        raise ValueError("storage: the model has no pool layers")
    return PoolStorage(
        pool_size=size, pool_bits=model.pool_bits, lut_bits=model.lut_bits, weights=weights,
        pooled_weights=pooled, index_storage=vectors * index_width(size),
        pool_storage=size * GROUP * model.pool_bits, pool_table=model.pool_table,
        lut_storage=table_entries(size, model.pool_table) * model.lut_bits,
        int8_storage=8 * int8)


def image_storage(image) -> WeightStorage:
    """:class:`WeightStorage` of a :class:`~shiftpool.sw.compile.image.Image` for the pool
    engine (``image.config.engine == "pool"``), counted from its packed rows: every row
    of the regions that carry weights (``indices``, ``pool``, and ``weights`` for the
    int8 layers) at the width the link sends them (padding lanes of partial groups
    included); the on-chip count has the engine's lookup tables (one per lane) in
    place of the pool rows."""
    cfg = image.config
    if cfg.engine != "pool":
        raise ValueError(f"image_storage: engine {cfg.engine!r} is not 'pool'")
    weights = sum(len(layer.bias) * layer.fan_in for layer in image.model.layers
                  if layer.is_mac)

    def bits(region: str) -> int:
        return len(image.regions[region]) * image.region_width(region)

    return WeightStorage(weights=weights, index_storage=bits("indices"),
                         pool_storage=bits("pool"), int8_storage=bits("weights"),
                         lut_storage=cfg.lanes * table_entries(cfg.pool_size, cfg.pool_table)
                         * cfg.lut_bits)


# -- the scheme ------------------------------------------------------------------------

#: Largest pool :func:`build_pool` is asked for: the lookup table has 256 x S entries.
MAX_COMPRESS_POOL = 256


class PoolQuantizer(Int8Quantizer):
    """One network-wide pool of 8-vectors (:func:`build_pool`) for the layers whose
    input channels come in multiples of 8 (:func:`pool_layer_indices`); the others
    stay int8, as in the paper."""

    def __init__(self, model, options, seed):
        super().__init__(model, options, seed)
        pooled = pool_layer_indices(model)
        if not pooled:
            raise ValueError("float_model: no conv3x3 or dense layer has input channels in "
                             "multiples of 8, so there is nothing to pool")
        pool_bits = self.options["pool_bits"]
        pool = build_pool([model.layers[i].weight for i in pooled], self.options["pool_size"],
                          pool_bits, seed)
        self.transform = PoolTransform(pool, pool_bits, pooled, Int8Transform())

    def model_fields(self):
        return {"pool": self.transform.pool, "pool_bits": self.options["pool_bits"],
                "lut_bits": self.options["lut_bits"], "pool_table": self.options["pool_table"]}

    def begin(self, qm):
        self.lut, self.lut_shift = pool_golden.model_lut(qm)

    def integerize(self, index, weight):
        if index not in self.transform.pool_layers:
            return super().integerize(index, weight)
        # A pool layer's accumulator is at 2**-(f_in + wf - lut_shift) (model_lut).
        idx, wf = self.transform.quantize(weight)
        return {"index": idx}, wf - self.lut_shift

    def mac(self, layer, a):
        if not layer.is_pool:
            return super().mac(layer, a)
        return pool_golden.pool_mac(layer, a, self.lut, self.options["act_bits"])

    def meta(self, qm):
        return {"pool_size": self.options["pool_size"], "pool_bits": self.options["pool_bits"],
                "lut_bits": self.options["lut_bits"], "pool_table": self.options["pool_table"],
                "lut_shift": self.lut_shift,
                "pool_layers": [i for i, layer in enumerate(qm.layers) if layer.is_pool],
                "storage": storage(qm).as_dict()}


POOL = register(Scheme(
    name="pool", summary="bit-serial weight pools: one shared pool of 8-vectors, lookup "
    "tables, activation precision chosen at run time", stored_as="pool", engine="pool",
    quantizer=PoolQuantizer, options=(
        Option("pool_size", int, 64, 2, MAX_COMPRESS_POOL, "weight pools: vectors S in the "
               "shared pool"),
        Option("pool_bits", int, 8, 2, 16, "weight pools: bits of a pool value"),
        Option("lut_bits", int, 16, 2, 32, "weight pools: bits of a lookup-table entry "
               "(entries are narrowed by a shift when lut_bits < pool_bits + 3)"),
        Option("pool_table", str, "full", help="weight pools: lookup-table organisation, "
               "full (256 entries per pool vector) or half (two 16-entry tables per vector, "
               "summed; entries narrowed per half)", choices=POOL_TABLES),
    ), sweep=tuple((f"S={s}", {"pool_size": s}) for s in (16, 64)), run_bits=(8, 5, 4, 3)))

