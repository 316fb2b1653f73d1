"""The bit-serial weight-pool golden model (``docs/arithmetic.md`` §12).

A pool layer's dot product is computed the way the lookup engine computes it: per
group of 8 input channels and per activation bit-plane ``b``, the 8 bits form a
pattern (bit ``j`` = bit ``b`` of channel ``8g + j``), and ``LUT[pattern][p]`` (the sum
of the pool vector ``p``'s entries selected by the pattern) replaces 8 multiply-adds:

    acc = sum_g sum_{b in planes} 2**b * LUT[pattern_b(g)][index(g)]

- :func:`build_lut` is the exact table, :func:`lut_shift` / :func:`narrow_lut` its
  narrowing to ``lut_bits``-bit signed entries (round half up); :func:`build_half_luts`
  the two exact 16-entry half tables of the ``"half"`` organisation; :func:`table` the
  256-row table either organisation's datapath reads, :func:`model_lut` a model's.
- :func:`planes` is the run-time precision rule: only the top ``bits`` of the
  ``act_bits`` bit-planes are processed.
- :func:`lut_dot` is the per-block reference (direct and precompute mode);
  :func:`pool_mac` applies it to a conv3x3 or dense layer.

Everything is int64 numpy; no floats.
"""

from __future__ import annotations

import numpy as np

from ...hw.config import POOL_TABLES
from ..model.file import GROUP, Layer, ModelError, QuantModel

__all__ = ["PATTERNS", "HALF", "HALF_PATTERNS", "MODES", "POOL_TABLES", "pattern_bits",
           "build_lut", "build_half_luts", "lut_shift", "narrow_lut", "table", "table_entries",
           "model_lut", "planes", "check_bits", "patterns", "lut_dot", "pool_mac"]

#: Number of 8-bit patterns, i.e. LUT rows.
PATTERNS = 1 << GROUP
#: Pattern bits that address one half table (the low or the high nibble).
HALF = GROUP // 2
#: Rows of one half table.
HALF_PATTERNS = 1 << HALF
#: Evaluation orders of a pool layer; both give bit-identical results.
MODES = ("direct", "precompute")


def pattern_bits() -> np.ndarray:
    """``[256, 8]`` int64: entry ``[pattern, j]`` is bit ``j`` of ``pattern``."""
    return (np.arange(PATTERNS)[:, None] >> np.arange(GROUP)[None, :]) & 1


def build_lut(pool: np.ndarray) -> np.ndarray:
    """The exact lookup table ``LUT[pattern][p] = sum_j bit_j(pattern) * pool[p][j]``.

    Parameters
    ----------
    pool:
        ``[S, 8]`` signed integers.

    Returns
    -------
    np.ndarray
        int64 ``[256, S]``; row 0 (no bit set) is all zero.
    """
    pool = np.asarray(pool, dtype=np.int64)
    if pool.ndim != 2 or pool.shape[1] != GROUP:
        raise ModelError(f"model: field 'pool': shape {pool.shape} must be (S, {GROUP})")
    return pattern_bits() @ pool.T


def build_half_luts(pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exact half tables ``LO[n][p] = sum_{j<4} bit_j(n) * pool[p][j]`` and
    ``HI[n][p] = sum_{j<4} bit_j(n) * pool[p][4 + j]`` for ``n`` in ``0..15``, so that
    ``build_lut(pool)[q] = LO[q & 15] + HI[q >> 4]``.

    Returns
    -------
    lo, hi:
        int64 ``[16, S]`` each; row 0 is all zero.
    """
    pool = np.asarray(pool, dtype=np.int64)
    if pool.ndim != 2 or pool.shape[1] != GROUP:
        raise ModelError(f"model: field 'pool': shape {pool.shape} must be (S, {GROUP})")
    bits = pattern_bits()[:HALF_PATTERNS, :HALF]
    return bits @ pool[:, :HALF].T, bits @ pool[:, HALF:].T


def _round_shift(v: np.ndarray, shift: int) -> np.ndarray:
    """``(v + 2**(shift-1)) >> shift``: divide by ``2**shift``, halves rounded up."""
    v = np.asarray(v, dtype=np.int64)
    return (v + (1 << (shift - 1))) >> shift if shift > 0 else v


def lut_shift(lut: np.ndarray, lut_bits: int) -> int:
    """The smallest ``k >= 0`` such that every entry of ``narrow_lut(lut, k)`` fits a
    signed ``lut_bits``-bit word (``-2**(lut_bits-1) .. 2**(lut_bits-1) - 1``).

    ``k = 0`` (the table is exact) whenever ``lut_bits >= pool_bits + 3``.
    """
    if not 2 <= lut_bits <= 62:
        raise ModelError(f"model: field 'lut_bits': {lut_bits} is out of range 2..62")
    lut = np.asarray(lut, dtype=np.int64)
    lo, hi = (int(lut.min()), int(lut.max())) if lut.size else (0, 0)
    top = 1 << (lut_bits - 1)
    k = 0
    while not (-top <= int(_round_shift(np.int64(lo), k)) and
               int(_round_shift(np.int64(hi), k)) <= top - 1):
        k += 1
    return k


def narrow_lut(lut: np.ndarray, shift: int) -> np.ndarray:
    """Entries divided by ``2**shift``, rounded to nearest with halves up:
    ``(LUT + 2**(shift-1)) >> shift`` (unchanged for ``shift = 0``). Row 0 stays 0."""
    return _round_shift(lut, shift)


def table(pool: np.ndarray, lut_bits: int, organisation: str = "full"
          ) -> tuple[np.ndarray, int]:
    """The entries a lookup datapath of ``organisation`` reads for every pattern, and the
    table's narrowing shift (``docs/arithmetic.md`` §12.3).

    - ``"full"``: one 256-entry table per vector, ``shift = lut_shift(X, lut_bits)``
      of the exact table ``X = build_lut(pool)``, entries ``narrow_lut(X, shift)``.
    - ``"half"``: two 16-entry tables per vector (:func:`build_half_luts`), each entry
      a signed ``lut_bits`` word: ``shift = lut_shift(LO and HI together, lut_bits)``,
      and the entry of pattern ``q`` is ``narrow(LO[q & 15]) + narrow(HI[q >> 4])``
      (each half narrowed with halves up, then summed; at most ``lut_bits + 1`` bits).

    With ``shift = 0`` in both organisations both give ``build_lut(pool)`` exactly.

    Returns
    -------
    lut, shift:
        int64 ``[256, S]`` and the shift ``k``.
    """
    if organisation not in POOL_TABLES:
        raise ModelError(f"model: field 'pool_table': {organisation!r} is unknown; allowed: "
                         f"{', '.join(POOL_TABLES)}")
    if organisation == "full":
        exact = build_lut(pool)
        shift = lut_shift(exact, lut_bits)
        return narrow_lut(exact, shift), shift
    lo, hi = build_half_luts(pool)
    shift = lut_shift(np.concatenate([lo, hi]), lut_bits)
    q = np.arange(PATTERNS)
    return (narrow_lut(lo, shift)[q & (HALF_PATTERNS - 1)]
            + narrow_lut(hi, shift)[q >> HALF]), shift


def table_entries(pool_size: int, organisation: str = "full") -> int:
    """Stored entries of one copy of the table: ``256 * S`` (full), ``2 * 16 * S``
    (half)."""
    if organisation not in POOL_TABLES:
        raise ModelError(f"model: field 'pool_table': {organisation!r} is unknown; allowed: "
                         f"{', '.join(POOL_TABLES)}")
    return (PATTERNS if organisation == "full" else 2 * HALF_PATTERNS) * int(pool_size)


def model_lut(model: QuantModel) -> tuple[np.ndarray, int]:
    """The table a pool model's datapath reads and its narrowing shift:
    :func:`table` of the model's ``pool``, ``lut_bits`` and ``pool_table``.

    Returns
    -------
    lut, shift:
        int64 ``[256, S]`` entries (at most ``model.lut_bits`` signed bits, ``+ 1`` for
        half tables) and the shift; with ``shift > 0`` a pool layer's accumulator is
        ``2**-shift`` times the exact dot product (rounded per entry, or per half
        entry), and the layer's bias and shift are stored for that scale.
    """
    return table(model.pool, model.lut_bits, model.pool_table)


def planes(act_bits: int, bits: int | None = None) -> range:
    """Bit-planes processed at run-time precision ``bits``: the top ``bits`` of the
    ``act_bits`` planes, ``act_bits - bits .. act_bits - 1`` (all when ``None``).

    Dropping planes ``0 .. act_bits - bits - 1`` is the same as truncating every
    activation to its top bits, ``a & -2**(act_bits - bits)`` (floor to a multiple of
    ``2**(act_bits - bits)``), at unchanged scale.
    """
    bits = act_bits if bits is None else bits
    return range(act_bits - bits, act_bits)


def check_bits(bits, act_bits: int, where: str = "") -> int:
    """Validate a run-time precision: an integer in ``1 .. act_bits``."""
    prefix = f"{where}: " if where else ""
    if (not isinstance(bits, (int, np.integer)) or isinstance(bits, (bool, np.bool_))
            or not 1 <= bits <= act_bits):
        raise ModelError(f"{prefix}field 'bits': run-time precision {bits!r} must be an "
                         f"integer in 1..{act_bits} (the activation width act_bits)")
    return int(bits)


def patterns(a: np.ndarray, b: int) -> np.ndarray:
    """Bit-plane ``b`` of activations ``a`` ``[M, 8G]`` as patterns ``[M, G]``: pattern
    bit ``j`` is bit ``b`` of input ``8g + j`` (the lowest input is the LSB)."""
    a = np.asarray(a, dtype=np.int64)
    bit = (a.reshape(len(a), -1, GROUP) >> b) & 1
    return bit @ (np.int64(1) << np.arange(GROUP, dtype=np.int64))


def lut_dot(a: np.ndarray, index: np.ndarray, lut: np.ndarray, act_bits: int,
            bits: int | None = None, mode: str = "direct") -> np.ndarray:
    """Bit-serial dot products of activation rows with pool-indexed filters.

    ``out[m, f] = sum_g sum_{b in planes(act_bits, bits)} 2**b *
    LUT[patterns(a, b)[m, g], index[f, g]]``.

    Parameters
    ----------
    a:
        Unsigned activations ``[M, 8G]`` in ``0 .. 2**act_bits - 1`` (not checked).
    index:
        Pool indices ``[F, G]``.
    lut:
        ``[256, S]`` table (exact or narrowed).
    act_bits, bits:
        Activation width and run-time precision (``None``: all planes).
    mode:
        ``"direct"``: each filter looks up ``LUT[pattern][index]`` per plane and
        accumulates. ``"precompute"``: first ``R[m, g, p] = sum_b 2**b
        LUT[pattern_b][p]`` for every pool vector ``p``, then each filter reads
        ``R[m, g, index[f, g]]``. Integer sums in another order: bit-identical.

    Returns
    -------
    np.ndarray
        int64 ``[M, F]``.
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is unknown; allowed: {', '.join(MODES)}")
    lut = np.asarray(lut, dtype=np.int64)
    index = np.asarray(index, dtype=np.int64)
    pats = [(b, patterns(a, b)) for b in planes(act_bits, bits)]
    out = np.zeros((len(a), len(index)), dtype=np.int64)
    for g in range(index.shape[1]):
        if mode == "direct":
            # LUT[:, index[:, g]] is the [256, F] slice every filter of the group reads.
            cols = lut[:, index[:, g]]
            for b, pat in pats:
                out += cols[pat[:, g]] << b
        else:
            r = np.zeros((len(a), lut.shape[1]), dtype=np.int64)
            for b, pat in pats:
                r += lut[pat[:, g]] << b
            out += r[:, index[:, g]]
    return out


def pool_mac(layer: Layer, a: np.ndarray, lut: np.ndarray, act_bits: int,
             bits: int | None = None, mode: str = "direct") -> np.ndarray:
    """Accumulators (without bias) of a pool layer on activations ``a``.

    conv3x3: ``a`` ``(N, C, H, W)`` -> ``(N, Co, H, W)``, zero padding 1 (a padding
    activation is 0, so its pattern bit is 0). dense: ``a`` ``(N, ...)`` flattened in
    C, H, W order -> ``(N, Co)``; groups are consecutive inputs ``8g .. 8g+7``.
    """
    a = np.asarray(a, dtype=np.int64)
    index = np.asarray(layer.index, dtype=np.int64)
    if layer.kind == "dense":
        return lut_dot(a.reshape(len(a), GROUP * index.shape[1]), index, lut, act_bits,
                       bits, mode)
    n, c, h, w = a.shape
    pad = np.zeros((n, c, h + 2, w + 2), dtype=np.int64)
    pad[:, :, 1:-1, 1:-1] = a
    out = np.zeros((n * h * w, index.shape[0]), dtype=np.int64)
    for ky in range(3):
        for kx in range(3):
            # One row per output position, channels last: [N*H*W, C].
            rows = pad[:, :, ky:ky + h, kx:kx + w].transpose(0, 2, 3, 1).reshape(-1, c)
            out += lut_dot(rows, index[:, :, ky, kx], lut, act_bits, bits, mode)
    return out.reshape(n, h, w, -1).transpose(0, 3, 1, 2)
