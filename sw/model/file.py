"""Integer models and the model file (``.npz`` with a JSON header).

The layout is specified in ``docs/model-format.md``; this module is its reference
reader and writer. A :class:`QuantModel` holds only integers (weights as codes or
pool indices, biases, shifts); :mod:`shiftpool.sw.schemes.golden` evaluates it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ...hw.config import POOL_TABLES
from ..schemes.registry import stored_schemes
from .npzfile import json_header, open_npz

__all__ = [
    "FORMAT", "VERSION", "KINDS", "GROUP", "MAX_INPUT_FRAC", "MAX_POOL_SIZE", "Layer", "QuantModel",
    "ModelError", "term_values", "group_axis", "pool_weight", "load_model", "read_model",
    "save_model",
]

FORMAT = "shiftpool-model"
VERSION = 1
#: Compression schemes a model file may hold.
#: Layer kinds: 3x3 convolution (stride 1, zero padding 1), dense, 2x2 max-pool.
KINDS = ("conv3x3", "dense", "maxpool2")
#: Weights per pool vector: input channels ``8g .. 8g+7`` (``docs/arithmetic.md`` §12).
GROUP = 8
#: Largest ``input_frac``: inputs are scaled by ``2**input_frac`` in float64.
MAX_INPUT_FRAC = 62

#: Largest weight pool a model file may hold (indices are stored as uint16).
MAX_POOL_SIZE = 1 << 16


class ModelError(ValueError):
    """A malformed or inconsistent model (file)."""


def term_values(terms: np.ndarray) -> np.ndarray:
    """Integer value of FLightNN term codes: 0 is zero, ``+-(e+1)`` is ``+-2**e``."""
    terms = np.asarray(terms, dtype=np.int64)
    mag = np.where(terms == 0, 0, np.left_shift(1, np.maximum(np.abs(terms) - 1, 0)))
    return np.sign(terms) * mag


def group_axis(kind: str, in_shape: tuple) -> int:
    """Length of the axis a MAC layer's weights are cut into 8-vectors along: the
    input channels ``C`` of a conv3x3, the flattened input size ``N`` of a dense."""
    return int(in_shape[0]) if kind == "conv3x3" else int(np.prod(in_shape))


#: How an rbnn layer's rounds extend it: blocks of output units (``"outputs"``: the
#: hidden units of every round) or of inputs (``"inputs"``: the output layer, which
#: sums the contributions of every round's hidden units).
EXPANDS = ("outputs", "inputs")


def rbnn_weight(slots: np.ndarray, slot_bits: int, rounds: int, expand: str) -> np.ndarray:
    """The +1/-1 weights (int64) an rbnn layer's ``slots`` stand for.

    Round ``r``'s weight of a slot is its bit ``slot_bits - 1 - r``: 0 is +1, 1 is -1.
    ``expand="outputs"``: slots ``[H, N]`` give weights ``[rounds*H, N]`` with
    ``w[r*H + j, i] = sign_r(slots[j, i])``; ``"inputs"``: slots ``[C, H]`` give
    ``[C, rounds*H]`` with ``w[o, r*H + j] = sign_r(slots[o, j])``.
    """
    slots = np.asarray(slots, dtype=np.int64)
    signs = [1 - 2 * ((slots >> (slot_bits - 1 - r)) & 1) for r in range(rounds)]
    return np.concatenate(signs, axis=0 if expand == "outputs" else 1)


#: An mlg layer's arrays: level-1 bases and coefficients, or the stored level-1 weights,
#: and the level-2 coefficients.
MLG_ARRAYS = ("mlg_b", "mlg_u", "mlg_w1", "mlg_v")
#: The model field holding the bit width ``q`` of each mlg array's odd values.
MLG_WIDTH_FIELD = {"mlg_b": "qb", "mlg_u": "qu", "mlg_w1": "qu", "mlg_v": "qv"}


def mlg_weight(layer) -> np.ndarray:
    """The integer weights (int64, ``[Co, Ci(, 3, 3)]``) an mlg layer generates, exactly:
    ``W1[c] = U[c] @ B[c]`` (or the stored ``W1``), then ``W = V @ W1`` (or ``W1``)."""
    if layer.mlg_w1 is not None:
        w1 = np.asarray(layer.mlg_w1, dtype=np.int64)
    else:
        w1 = np.einsum("cib,cbk->cik", np.asarray(layer.mlg_u, dtype=np.int64),
                       np.asarray(layer.mlg_b, dtype=np.int64))
    flat = w1.reshape(len(w1), -1)
    w = flat if layer.mlg_v is None else np.asarray(layer.mlg_v, dtype=np.int64) @ flat
    ci = w1.shape[1]
    return w.reshape(len(w), ci, 3, 3) if layer.kind == "conv3x3" else w.reshape(len(w), ci)


def pool_weight(index: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Integer weights a pool layer stands for (int64).

    ``index`` is ``[Co, G, 3, 3]`` (conv3x3) or ``[Co, G]`` (dense); the weights are
    ``[Co, 8G, 3, 3]`` / ``[Co, 8G]`` with ``w[f, 8g + j, ...] = pool[index[f, g, ...], j]``.
    """
    index = np.asarray(index, dtype=np.int64)
    vectors = np.asarray(pool, dtype=np.int64)[index]          # [Co, G, (3, 3,) 8]
    if index.ndim == 4:
        vectors = vectors.transpose(0, 1, 4, 2, 3)              # [Co, G, 8, 3, 3]
    return vectors.reshape(index.shape[0], index.shape[1] * GROUP, *index.shape[2:])


@dataclasses.dataclass
class Layer:
    """One layer of an integer model.

    ``in_shape``/``out_shape`` are ``(C, H, W)`` for feature maps and ``(N,)`` for
    vectors. MAC layers (``conv3x3``, ``dense``) carry exactly one of ``weight``
    (int8 scheme: integer weights ``[Co, Ci(, 3, 3)]``) or ``terms`` (flightnn:
    ``[2, Co, Ci(, 3, 3)]`` term codes) plus ``k`` (terms per filter), ``bias``
    (accumulator scale), ``shift`` and ``relu``. In a pool model a MAC layer holds
    either ``index`` (pool indices ``[Co, Ci/8(, 3, 3)]``, one per 8-vector of input
    channels; the pool is the model's) or int8 ``weight``. An rbnn dense layer holds
    ``slots`` (unsigned ``slot_bits``-bit storage slots) read in ``rounds`` rounds,
    one binary weight per round from each slot; ``expand`` says whether the rounds
    are blocks of outputs (a hidden layer) or of inputs (the output layer):
    :func:`rbnn_weight`. An mlg layer holds the odd integers of its bases and
    coefficients (``mlg_u`` and ``mlg_b``, or ``mlg_w1``; optionally ``mlg_v``), from
    which :func:`mlg_weight` generates its weights.
    """

    kind: str
    in_shape: tuple
    out_shape: tuple
    weight: np.ndarray | None = None
    terms: np.ndarray | None = None
    k: np.ndarray | None = None
    bias: np.ndarray | None = None
    shift: int = 0
    relu: bool = False
    index: np.ndarray | None = None
    slots: np.ndarray | None = None
    slot_bits: int = 0
    rounds: int = 0
    expand: str | None = None
    mlg_b: np.ndarray | None = None
    mlg_u: np.ndarray | None = None
    mlg_w1: np.ndarray | None = None
    mlg_v: np.ndarray | None = None

    @property
    def is_mlg(self) -> bool:
        """An MLG layer: weights generated from stored bases and coefficients."""
        return any(getattr(self, n) is not None for n in MLG_ARRAYS)

    @property
    def is_mac(self) -> bool:
        return self.kind in ("conv3x3", "dense")

    @property
    def is_pool(self) -> bool:
        """A weight-pool layer (weights are indices into the model's pool)."""
        return self.index is not None

    @property
    def fan_in(self) -> int:
        """Dot-product length ``Ci*k*k`` of a MAC layer."""
        if self.index is not None:
            return GROUP * int(np.prod(np.shape(self.index)[1:]))
        if self.slots is not None:
            cols = int(np.shape(self.slots)[1])
            return cols * self.rounds if self.expand == "inputs" else cols
        return int(np.prod(self.int_weight.shape[1:]))

    @property
    def int_weight(self) -> np.ndarray:
        """The integer weight each filter tap stands for (int64).

        Pool layers need the model's pool: use :meth:`QuantModel.layer_weight`.
        """
        if self.index is not None:
            raise ModelError("a pool layer's weights are pool vectors: use "
                             "QuantModel.layer_weight(i) or model.pool_weight(index, pool)")
        if self.slots is not None:
            return rbnn_weight(self.slots, self.slot_bits, self.rounds, self.expand)
        if self.is_mlg:
            return mlg_weight(self)
        if self.terms is not None:
            return term_values(self.terms).sum(axis=0)
        return np.asarray(self.weight, dtype=np.int64)


@dataclasses.dataclass
class QuantModel:
    """An integer model: what the golden model runs and the compiler maps to RTL.

    Inputs are unsigned ``act_bits`` integers ``q = clip(round(x * 2**input_frac),
    0, 2**act_bits - 1)`` of the float input ``x``; outputs are the final layer's
    signed accumulators (logits at scale ``2**-output_frac``).

    Pool models (``scheme="pool"``) also carry the network-wide ``pool`` (``[S, 8]``
    signed integers of ``pool_bits`` bits) and ``lut_bits``, the width of the lookup
    table entries the bit-serial datapath reads, and ``pool_table``, the table's
    organisation (``"full"`` or ``"half"``), which sets how narrowed entries are rounded
    (``docs/arithmetic.md`` §12).
    """

    scheme: str
    act_bits: int
    input_shape: tuple
    input_frac: int
    layers: list
    exp_bits: int = 0
    output_frac: int = 0
    meta: dict = dataclasses.field(default_factory=dict)
    pool: np.ndarray | None = None
    pool_bits: int = 0
    lut_bits: int = 0
    pool_table: str = "full"
    qb: int = 0
    qu: int = 0
    qv: int = 0
    #: How the requantizer rounds a value exactly halfway between two steps:
    #: ``"half_up"`` (toward +infinity, every compressed model) or ``"half_even"``
    #: (imported models whose quantizers round halves to even; ``docs/arithmetic.md`` §6).
    rounding: str = "half_up"

    @property
    def classes(self) -> int:
        return int(self.layers[-1].out_shape[0])

    def layer_weight(self, i: int) -> np.ndarray:
        """Integer weights of MAC layer ``i`` (int64), pool vectors reconstructed."""
        layer = self.layers[i]
        if layer.index is not None:
            return pool_weight(layer.index, self.pool)
        return layer.int_weight

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float inputs -> unsigned integer activations (round half up, then clip).

        Raises :class:`ModelError` if an input is NaN (it has no integer).
        """
        x = np.asarray(x)
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
                or x.dtype == np.bool_):
            raise ModelError(f"inputs: dtype {x.dtype} cannot be quantized; give real "
                             f"numbers (integers or floats)")
        x = x.astype(np.float64)
        nan = np.isnan(x)
        if nan.any():
            first = tuple(int(v) for v in np.argwhere(nan)[0])
            raise ModelError(f"inputs: {int(nan.sum())} value(s) are NaN (the first at index "
                             f"{first}); replace them before quantizing")
        with np.errstate(over="ignore"):     # beyond float64 is +-inf: clipped below
            q = np.floor(x * float(1 << self.input_frac) + 0.5)
        return np.clip(q, 0, (1 << self.act_bits) - 1).astype(np.int64)

    def validate(self) -> None:
        """Raise :class:`ModelError` naming the layer and field that is wrong."""
        validate_model(self)


def _err(i, field, msg):
    where = "model" if i is None else f"layer {i}"
    return ModelError(f"{where}: field {field!r}: {msg}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


#: The requantizer's rounding of halves (``QuantModel.rounding``).
ROUNDINGS = ("half_up", "half_even")


def validate_model(m: QuantModel) -> None:
    # Type checks first: a header from a file may hold any JSON value.
    for field in ("act_bits", "exp_bits", "input_frac", "output_frac", "pool_bits",
                  "lut_bits"):
        if not _is_int(getattr(m, field)):
            raise _err(None, field, f"{getattr(m, field)!r} must be an integer")
    stored = stored_schemes()
    if m.scheme not in stored:
        raise _err(None, "scheme", f"{m.scheme!r} is unknown; allowed: {', '.join(stored)}")
    if not (2 <= m.act_bits <= 16):
        raise _err(None, "act_bits", f"{m.act_bits} is out of range 2..16")
    if m.rounding not in ROUNDINGS:
        raise _err(None, "rounding", f"{m.rounding!r} is unknown; allowed: "
                   f"{', '.join(ROUNDINGS)}")
    if not (0 <= m.input_frac <= MAX_INPUT_FRAC):
        raise _err(None, "input_frac", f"{m.input_frac} is out of range 0..{MAX_INPUT_FRAC} "
                   f"(inputs are quantized as round(x * 2**input_frac))")
    if m.scheme == "flightnn" and not (1 <= m.exp_bits <= 4):
        raise _err(None, "exp_bits", f"{m.exp_bits} is out of range 1..4")
    _check_pool(m)
    if m.scheme == "mlg":
        for field in ("qb", "qu", "qv"):
            value = getattr(m, field)
            if not _is_int(value) or not 2 <= value <= 8:
                raise _err(None, field, f"{value!r} must be an integer in 2..8")
    if len(m.input_shape) != 3 or not all(_is_int(s) and s > 0 for s in m.input_shape):
        raise _err(None, "input_shape", f"{m.input_shape} must be (C, H, W), positive integers")
    if not m.layers:
        raise _err(None, "layers", "a model needs at least one layer")
    shape = tuple(m.input_shape)
    macs = [i for i, layer in enumerate(m.layers) if layer.is_mac]
    if not macs or macs[-1] != len(m.layers) - 1 or m.layers[-1].kind != "dense":
        # The accelerator's output memory holds one word per class: a conv3x3 output
        # layer (a whole feature map) has no place to go.
        raise _err(len(m.layers) - 1, "kind", "the last layer must be dense (a classifier); "
                   "end a convolutional model with a dense layer")
    for i, layer in enumerate(m.layers):
        if layer.kind not in KINDS:
            raise _err(i, "kind", f"{layer.kind!r} is unknown; allowed: {', '.join(KINDS)}")
        if tuple(layer.in_shape) != shape:
            raise _err(i, "in_shape", f"{tuple(layer.in_shape)} does not match the previous "
                       f"layer's output {shape}")
        if layer.kind == "maxpool2":
            if len(shape) != 3 or shape[1] < 2 or shape[2] < 2:
                raise _err(i, "in_shape", f"maxpool2 needs a (C, H, W) map with H, W >= 2, "
                           f"not {shape}")
            expect = (shape[0], shape[1] // 2, shape[2] // 2)
        else:
            expect = _check_mac(m, i, layer, shape, last=(i == len(m.layers) - 1))
        if tuple(layer.out_shape) != expect:
            raise _err(i, "out_shape", f"{tuple(layer.out_shape)} should be {expect}")
        shape = expect


def _check_pool(m: QuantModel) -> None:
    """Model-level pool fields: only pool models have them, and theirs are sane."""
    if m.scheme != "pool":
        if m.pool is not None:
            raise _err(None, "pool", f"only scheme 'pool' models have a pool, this is "
                       f"{m.scheme!r}")
        return
    if not 2 <= m.pool_bits <= 16:
        raise _err(None, "pool_bits", f"{m.pool_bits} is out of range 2..16")
    if not 2 <= m.lut_bits <= 32:
        raise _err(None, "lut_bits", f"{m.lut_bits} is out of range 2..32")
    if not isinstance(m.pool_table, str) or m.pool_table not in POOL_TABLES:
        raise _err(None, "pool_table", f"{m.pool_table!r} is unknown; allowed: "
                   f"{', '.join(POOL_TABLES)} (full: 256-entry tables, half: two 16-entry "
                   f"tables per vector)")
    if m.pool is None:
        raise _err(None, "pool", "a pool model needs its pool: an integer array [S, 8]")
    pool = np.asarray(m.pool)
    if not np.issubdtype(pool.dtype, np.integer):
        raise _err(None, "pool", f"must hold integers, not {pool.dtype}")
    if pool.ndim != 2 or pool.shape[1] != GROUP or not 2 <= pool.shape[0] <= MAX_POOL_SIZE:
        raise _err(None, "pool", f"shape {pool.shape} must be (S, {GROUP}) with S in "
                   f"2..{MAX_POOL_SIZE}")
    top = (1 << (m.pool_bits - 1)) - 1
    lo, hi = int(pool.min()), int(pool.max())
    if lo < -top or hi > top:
        raise _err(None, "pool", f"values must be in -{top}..{top} (pool_bits={m.pool_bits}), "
                   f"found {lo}..{hi}")


#: Widest rbnn storage slot (one SPRAM word).
MAX_SLOT_BITS = 16


def _check_slots(i: int, layer: Layer, shape: tuple) -> int:
    """An rbnn layer's ``slots``, ``slot_bits``, ``rounds`` and ``expand``; returns
    ``Co``."""
    if layer.weight is not None or layer.terms is not None or layer.index is not None \
            or layer.k is not None:
        raise _err(i, "slots", "an rbnn layer stores its weights in 'slots' only (no "
                   "'weight', 'terms', 'index' or 'k')")
    if layer.kind != "dense":
        raise _err(i, "kind", "rbnn layers are dense (the scheme trains MLPs)")
    if not _is_int(layer.slot_bits) or not 2 <= layer.slot_bits <= MAX_SLOT_BITS:
        raise _err(i, "slot_bits", f"{layer.slot_bits!r} must be an integer in "
                   f"2..{MAX_SLOT_BITS}")
    if not _is_int(layer.rounds) or not 1 <= layer.rounds <= layer.slot_bits - 1:
        raise _err(i, "rounds", f"{layer.rounds!r} must be an integer in 1..slot_bits - 1 "
                   f"= {layer.slot_bits - 1} (each round trains at least 2 bits)")
    if layer.expand not in EXPANDS:
        raise _err(i, "expand", f"{layer.expand!r} must be one of {', '.join(EXPANDS)}")
    arr = np.asarray(layer.slots)
    if not np.issubdtype(arr.dtype, np.integer):
        raise _err(i, "slots", f"must hold integers, not {arr.dtype}")
    n = int(np.prod(shape))
    rounds = layer.rounds
    if layer.expand == "outputs":
        ok = arr.ndim == 2 and arr.shape[1] == n
        expect = f"(H, {n})"
        co = arr.shape[0] * rounds if arr.ndim == 2 else 0
    else:
        ok = arr.ndim == 2 and n % rounds == 0 and arr.shape[1] == n // rounds
        expect = (f"(Co, {n // rounds}): {rounds} rounds of {n // rounds} inputs"
                  if n % rounds == 0 else f"a split of the {n} inputs into {rounds} rounds")
        co = arr.shape[0] if arr.ndim == 2 else 0
    if not ok:
        raise _err(i, "slots", f"shape {arr.shape} does not fit input {shape} with "
                   f"expand={layer.expand!r}: expected {expect}")
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0 or hi >= 1 << layer.slot_bits:
        raise _err(i, "slots", f"slots must be in 0..{(1 << layer.slot_bits) - 1} "
                   f"(slot_bits={layer.slot_bits}), found {lo}..{hi}")
    return co


def _check_mlg(m: QuantModel, i: int, layer: Layer, shape: tuple) -> int:
    """An mlg layer's bases and coefficients; returns ``Co``."""
    if layer.weight is not None or layer.terms is not None or layer.k is not None:
        raise _err(i, "mlg_w1", "an mlg layer stores only its bases and coefficients (no "
                   "'weight', 'terms' or 'k')")
    if layer.kind == "conv3x3" and len(shape) != 3:
        raise _err(i, "in_shape", f"conv3x3 needs a (C, H, W) input, not {shape}")
    ci = shape[0] if layer.kind == "conv3x3" else int(np.prod(shape))
    kk = 9 if layer.kind == "conv3x3" else 1
    level1 = layer.mlg_b is not None or layer.mlg_u is not None
    if level1 == (layer.mlg_w1 is not None):
        raise _err(i, "mlg_w1", "needs either 'mlg_u' and 'mlg_b' (level 1) or 'mlg_w1'")
    arrays = {}
    for name in MLG_ARRAYS:
        value = getattr(layer, name)
        if value is None:
            continue
        arr = np.asarray(value)
        if not np.issubdtype(arr.dtype, np.integer) or arr.ndim != (2 if name == "mlg_v"
                                                                    else 3):
            raise _err(i, name, f"must be a {2 if name == 'mlg_v' else 3}-d integer array, "
                       f"not {arr.dtype} {arr.shape}")
        arrays[name] = arr
    if level1:
        if "mlg_b" not in arrays or "mlg_u" not in arrays:
            raise _err(i, "mlg_b", "level 1 needs both 'mlg_u' and 'mlg_b'")
        bc, bi = arrays["mlg_b"].shape[:2]
        if arrays["mlg_b"].shape != (bc, bi, kk) or arrays["mlg_u"].shape != (bc, ci, bi):
            raise _err(i, "mlg_u", f"shapes {arrays['mlg_u'].shape} (U) and "
                       f"{arrays['mlg_b'].shape} (B) must be (Bc, {ci}, Bi) and "
                       f"(Bc, Bi, {kk})")
        if not 0 < bi < min(ci, kk):
            raise _err(i, "mlg_b", f"Bi = {bi} violates the level-1 condition 0 < Bi < "
                       f"min(Ci, k*k) = {min(ci, kk)}")
    else:
        bc = arrays["mlg_w1"].shape[0]
        if arrays["mlg_w1"].shape[1:] != (ci, kk):
            raise _err(i, "mlg_w1", f"shape {arrays['mlg_w1'].shape} must be (Bc, {ci}, {kk})")
    if "mlg_v" in arrays:
        co = arrays["mlg_v"].shape[0]
        if arrays["mlg_v"].shape[1] != bc:
            raise _err(i, "mlg_v", f"shape {arrays['mlg_v'].shape} must be (Co, {bc})")
        if not 0 < bc < min(co, ci * kk):
            raise _err(i, "mlg_v", f"Bc = {bc} violates the level-2 condition 0 < Bc < "
                       f"min(Co, Ci*k*k) = {min(co, ci * kk)}")
    else:
        co = bc
    for name, arr in arrays.items():
        field = MLG_WIDTH_FIELD[name]
        q = getattr(m, field)
        top = (1 << q) - 1
        if arr.size and (int(arr.min()) < -top or int(arr.max()) > top or
                         not np.all(arr % 2 == 1)):
            raise _err(i, name, f"values must be odd integers in -{top}..{top} "
                       f"({field}={q}), found {int(arr.min())}..{int(arr.max())}")
    return co


def _check_index(m: QuantModel, i: int, layer: Layer, shape: tuple) -> int:
    """A pool layer's ``index`` array; returns ``Co``."""
    arr = np.asarray(layer.index)
    if layer.weight is not None or layer.terms is not None:
        raise _err(i, "index", "a pool layer stores its weights in 'index' only (an int8 "
                   "layer of a pool model has 'weight' and no 'index')")
    if layer.k is not None:
        raise _err(i, "k", "pool layers have no k")
    if not np.issubdtype(arr.dtype, np.integer):
        raise _err(i, "index", f"must hold integers, not {arr.dtype}")
    if layer.kind == "conv3x3" and len(shape) != 3:
        raise _err(i, "in_shape", f"conv3x3 needs a (C, H, W) input, not {shape}")
    n = group_axis(layer.kind, shape)
    what = "input channels" if layer.kind == "conv3x3" else "inputs"
    if n % GROUP:
        raise _err(i, "index", f"{n} {what} cannot be grouped into {GROUP}-vectors; store "
                   f"this layer as int8 'weight' (or pad its {what} to a multiple of {GROUP})")
    tail = (n // GROUP, 3, 3) if layer.kind == "conv3x3" else (n // GROUP,)
    if arr.ndim != 1 + len(tail) or tuple(arr.shape[1:]) != tail:
        raise _err(i, "index", f"shape {arr.shape} does not fit input {shape}: expected "
                   f"(Co, {', '.join(map(str, tail))})")
    size = len(m.pool)
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0 or hi >= size:
        raise _err(i, "index", f"pool indices must be in 0..{size - 1} (pool of {size} "
                   f"vectors), found {lo}..{hi}")
    return arr.shape[0]


def _check_mac(m: QuantModel, i: int, layer: Layer, shape: tuple, last: bool) -> tuple:
    if layer.index is not None and m.scheme != "pool":
        raise _err(i, "index", f"only scheme 'pool' layers have pool indices, this is "
                   f"{m.scheme!r}")
    if (layer.slots is not None) != (m.scheme == "rbnn"):
        raise _err(i, "slots", "rbnn layers store their weights in 'slots' only" if
                   m.scheme == "rbnn" else f"only scheme 'rbnn' layers have storage slots, "
                   f"this is {m.scheme!r}")
    if layer.is_mlg != (m.scheme == "mlg"):
        raise _err(i, "mlg_w1" if m.scheme == "mlg" else "mlg_b", "mlg layers store their "
                   "weights as bases and coefficients only" if m.scheme == "mlg" else
                   f"only scheme 'mlg' layers have bases and coefficients, this is "
                   f"{m.scheme!r}")
    if layer.slots is not None:
        co = _check_slots(i, layer, shape)
    elif layer.is_mlg:
        co = _check_mlg(m, i, layer, shape)
    elif layer.index is not None:
        co = _check_index(m, i, layer, shape)
    elif m.scheme == "pool" and layer.weight is None:
        raise _err(i, "index", "a MAC layer of a pool model needs 'index' (a pool layer) or "
                   "'weight' (an int8 layer)")
    else:
        co = _check_codes(m, i, layer, shape)
    if layer.bias is None:
        raise _err(i, "bias", f"is missing: a MAC layer needs {co} integer biases")
    bias = np.asarray(layer.bias)
    if not np.issubdtype(bias.dtype, np.integer):
        raise _err(i, "bias", f"must hold integers, not {bias.dtype} (biases are integers "
                   f"at the accumulator's scale)")
    if bias.shape != (co,):
        raise _err(i, "bias", f"needs {co} integers, has shape {bias.shape}")
    if not isinstance(layer.shift, (int, np.integer)) or not 0 <= layer.shift <= 62:
        raise _err(i, "shift", f"{layer.shift!r} must be an integer in 0..62")
    if not isinstance(layer.relu, (bool, np.bool_)):
        raise _err(i, "relu", f"{layer.relu!r} must be true or false")
    if layer.relu == last:
        raise _err(i, "relu", "hidden MAC layers must have relu=true (activations are "
                   "unsigned) and the last layer relu=false (it outputs raw accumulators)")
    if layer.kind == "conv3x3":
        return (co, shape[1], shape[2])
    return (co,)


def _check_codes(m: QuantModel, i: int, layer: Layer, shape: tuple) -> int:
    """A flightnn layer's ``terms``/``k`` or an int8 layer's ``weight``; returns ``Co``."""
    has_w, has_t = layer.weight is not None, layer.terms is not None
    field = "terms" if m.scheme == "flightnn" else "weight"
    if (m.scheme == "flightnn") != has_t or has_w == has_t:
        what = "an int8 layer of a pool model" if m.scheme == "pool" else f"a {m.scheme} layer"
        raise _err(i, field, f"{what} stores its weights in {field!r} only")
    arr = np.asarray(layer.terms if has_t else layer.weight)
    if not np.issubdtype(arr.dtype, np.integer):
        raise _err(i, field, f"must hold integers, not {arr.dtype}")
    if layer.kind == "conv3x3":
        if len(shape) != 3:
            raise _err(i, "in_shape", f"conv3x3 needs a (C, H, W) input, not {shape}")
        wshape_tail = (shape[0], 3, 3)
    else:
        wshape_tail = (int(np.prod(shape)),)
    wshape = arr.shape[1:] if has_t else arr.shape
    if has_t and arr.shape[0] != 2:
        raise _err(i, "terms", f"first axis must be the 2 terms, shape is {arr.shape}")
    if len(wshape) != 1 + len(wshape_tail) or tuple(wshape[1:]) != wshape_tail:
        raise _err(i, field, f"shape {arr.shape} does not fit input {shape}: expected "
                   f"{('(2, ' if has_t else '(') + 'Co, ' + ', '.join(map(str, wshape_tail))})")
    co = wshape[0]
    # min/max, not abs: np.abs of int8 -128 overflows to -128 and would pass.
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if has_t:
        limit = 1 << m.exp_bits
        if lo < -limit or hi > limit:
            raise _err(i, "terms", f"term codes must be in -{limit}..{limit} "
                       f"(exp_bits={m.exp_bits}), found {lo}..{hi}")
        k = np.asarray(layer.k if layer.k is not None else [], dtype=np.int64)
        if layer.k is not None and not np.issubdtype(np.asarray(layer.k).dtype, np.integer):
            raise _err(i, "k", f"must hold integers, not {np.asarray(layer.k).dtype}")
        if k.shape != (co,) or not np.isin(k, (1, 2)).all():
            raise _err(i, "k", f"needs {co} entries, each 1 or 2")
        if np.any(arr[1][k == 1]):
            bad = int(np.flatnonzero((k == 1) & arr[1].reshape(co, -1).any(axis=1))[0])
            raise _err(i, "terms", f"filter {bad} has k=1 but a non-zero second term")
    else:
        if lo < -127 or hi > 127:
            raise _err(i, "weight", f"int8 weights must be in -127..127, found {lo}..{hi}")
        # The compiler would plan lanes by a stray k (and crash on a wrong length).
        if layer.k is not None:
            raise _err(i, "k", "int8 layers have no k (every filter is one pass)")
    return co


# -- file I/O ---------------------------------------------------------------------

_ARRAYS = ("weight", "terms", "k", "bias", "index", "slots", *MLG_ARRAYS)


def save_model(model: QuantModel, path: str | os.PathLike) -> None:
    """Validate and write ``model``; the file appears only when complete."""
    model.validate()
    layers = []
    arrays = {}
    for i, layer in enumerate(model.layers):
        entry = {"kind": layer.kind, "in_shape": list(layer.in_shape),
                 "out_shape": list(layer.out_shape)}
        if layer.is_mac:
            entry.update(shift=int(layer.shift), relu=bool(layer.relu))
        if layer.slots is not None:
            entry.update(slot_bits=int(layer.slot_bits), rounds=int(layer.rounds),
                         expand=layer.expand)
        layers.append(entry)
        for name in _ARRAYS:
            value = getattr(layer, name)
            if value is not None:
                arrays[f"layer{i}.{name}"] = _storage(name, np.asarray(value), model)
    header = {
        "format": FORMAT, "version": VERSION, "scheme": model.scheme,
        "act_bits": model.act_bits, "exp_bits": model.exp_bits,
        "input_shape": list(model.input_shape), "input_frac": model.input_frac,
        "output_frac": model.output_frac, "layers": layers, "meta": model.meta,
    }
    if model.scheme == "pool":
        # Only pool files carry these, so flightnn/int8 files stay as they were.
        header.update(pool_bits=model.pool_bits, lut_bits=model.lut_bits,
                      pool_table=model.pool_table)
        arrays["pool"] = _storage("pool", np.asarray(model.pool), model)
    if model.scheme == "mlg":
        header.update(qb=model.qb, qu=model.qu, qv=model.qv)
    if model.rounding != "half_up":
        # Only files that round otherwise carry it, so existing files stay as they were.
        header["rounding"] = model.rounding
    arrays["header"] = np.frombuffer(json.dumps(header, indent=1).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    _atomic_write(Path(path), buf.getvalue())


_DTYPES = {"weight": np.int8, "terms": np.int8, "k": np.uint8, "bias": np.int64,
           "slots": np.uint16, **dict.fromkeys(MLG_ARRAYS, np.int16)}


def _storage(name, arr, model):
    # Validated already, so the narrow dtypes hold every value.
    if name == "index":
        return arr.astype(np.uint8 if len(model.pool) <= 256 else np.uint16)
    if name == "pool":
        return arr.astype(np.int8 if model.pool_bits <= 8 else np.int16)
    return arr.astype(_DTYPES[name])


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_model(path: str | os.PathLike) -> QuantModel:
    """Read and validate a model file; errors name the layer and the field."""
    path = Path(path)
    npz, member = open_npz(path, ModelError, "model file", "shiftpool model file")
    with npz:
        header = json_header(npz, member, path, ModelError)
        if not isinstance(header, dict):
            raise ModelError(f"{path}: field 'header' must be a JSON object, not "
                             f"{type(header).__name__}")
        if header.get("format") != FORMAT:
            raise ModelError(f"{path}: field 'format' must be {FORMAT!r}")
        if header.get("version") != VERSION:
            raise ModelError(f"{path}: field 'version' = {header.get('version')!r}; "
                             f"this reader knows version {VERSION}")
        if not isinstance(header.get("layers"), list):
            raise ModelError(f"{path}: field 'layers' is missing or not a list")
        where = "header"  # named in errors: the layer entry being read, if any
        try:
            layers = []
            for i, entry in enumerate(header["layers"]):
                where = f"layer {i}"
                arrays = {n: member(f"layer{i}.{n}") for n in _ARRAYS
                          if f"layer{i}.{n}" in npz.files}
                layers.append(Layer(kind=entry["kind"], in_shape=tuple(entry["in_shape"]),
                                    out_shape=tuple(entry["out_shape"]),
                                    shift=entry.get("shift", 0), relu=entry.get("relu", False),
                                    slot_bits=entry.get("slot_bits", 0),
                                    rounds=entry.get("rounds", 0), expand=entry.get("expand"),
                                    **arrays))
            where = "header"
            model = QuantModel(
                scheme=header["scheme"], act_bits=header["act_bits"],
                exp_bits=header.get("exp_bits", 0), input_shape=tuple(header["input_shape"]),
                input_frac=header["input_frac"], output_frac=header.get("output_frac", 0),
                layers=layers, meta=header.get("meta", {}),
                pool=member("pool") if "pool" in npz.files else None,
                pool_bits=header.get("pool_bits", 0), lut_bits=header.get("lut_bits", 0),
                pool_table=header.get("pool_table", "full"),
                qb=header.get("qb", 0), qu=header.get("qu", 0), qv=header.get("qv", 0),
                rounding=header.get("rounding", "half_up"))
        except ModelError:
            raise
        except KeyError as exc:
            raise ModelError(f"{path}: {where}: field {exc} is missing") from None
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{path}: {where}: malformed entry: {exc}") from None
    try:
        model.validate()
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    return model


def read_model(path: Path) -> QuantModel:
    """:func:`load_model` with a friendlier error for a missing file."""
    if not Path(path).exists():
        raise ModelError(f"model file {path} does not exist; make one with "
                         f"'shiftpool compress'")
    return load_model(path)
