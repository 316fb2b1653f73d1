"""Golden model of one compute engine (``shiftpool.hw.engines``), beat by beat.

A beat is ``(acts, codes, first, last)``: ``taps`` unsigned activations, ``lanes x taps``
packed weight codes (the bits the engine's ``codes`` field holds) and two flags; the
binary engine's beats carry a fifth item, the RBNN ``round`` whose bit of each slot is
the weight. Each
lane accumulates ``sum_j value(codes[l][j]) * acts[j] - offset(codes[l][j])``,
restarting from zero on ``first``; every ``last`` beat yields the accumulators of all
lanes. ``offset`` (:func:`code_offset`) is 1 for a code whose term the engine makes as a
one's complement (the shift-add engine's negative codes), else 0: a constant of each
filter, which the compiler adds to its bias.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ...hw.config import AcceleratorConfig

__all__ = ["code_offset", "code_value", "engine_reference", "pack_code"]


def _int_array(x, what: str) -> np.ndarray:
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{what} must be integers, not {a.dtype}")
    return a.astype(np.int64)


def _scalar_or_array(a: np.ndarray):
    """A Python ``int`` for a 0-d result, else the int64 array."""
    return int(a) if a.ndim == 0 else a


def pack_code(config: AcceleratorConfig, value) -> int | np.ndarray:
    """Packed code (``config.code_width`` bits, as an unsigned integer) for ``value``.

    Parameters
    ----------
    config : AcceleratorConfig
    value : int or array of int
        ``"shiftadd"``: a term ``0`` or ``+-2**e`` with ``0 <= e < 2**exp_bits``; packed as
        ``e | sign << exp_bits | nonzero << (exp_bits + 1)`` (zero packs to ``0``).
        ``"int8"``: ``-128 .. 127``, packed as its two's complement byte.
        ``"binary"``: a storage slot ``0 .. 2**slot_bits - 1``, packed as itself.
        ``"insitu"``: a generated weight of ``mlg_w_width`` signed bits, packed as
        its two's complement.

    Raises
    ------
    ValueError
        If a value is not representable.
    """
    v = _int_array(value, "code values")
    width = config.code_width
    if config.engine == "binary":
        if np.any((v < 0) | (v >> width != 0)):
            raise ValueError(f"binary-engine slots must be in 0..{(1 << width) - 1}")
        return _scalar_or_array(v)
    if config.engine in ("int8", "insitu"):
        lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
        if np.any((v < lo) | (v > hi)):
            raise ValueError(f"{config.engine} weights must be in {lo}..{hi}; got "
                             f"{v[(v < lo) | (v > hi)]}")
        return _scalar_or_array(v & ((1 << width) - 1))
    mag = np.abs(v)
    exp = np.where(mag > 0, np.log2(np.maximum(mag, 1)).round().astype(np.int64), 0)
    bad = (mag != 0) & ((exp >= (1 << config.exp_bits)) | (np.left_shift(1, exp) != mag))
    if np.any(bad):
        raise ValueError(f"shift-add terms must be 0 or +-2**e with 0 <= e < "
                         f"{1 << config.exp_bits}; got {v[bad]}")
    e = config.exp_bits
    packed = np.where(mag == 0, 0, exp | (v < 0).astype(np.int64) << e | 1 << (e + 1))
    return _scalar_or_array(packed)


def code_value(config: AcceleratorConfig, code, round_: int = 0) -> int | np.ndarray:
    """Integer weight a packed code stands for; the inverse of :func:`pack_code`.

    A shift-add code without ``nonzero`` is ``0`` whatever its other bits. A binary
    engine's slot stands for ``+1`` or ``-1`` by its bit ``slot_bits - 1 - round_``
    (1 is ``-1``).

    Raises
    ------
    ValueError
        If a code is not in ``0 .. 2**code_width - 1``.
    """
    c = _int_array(code, "codes")
    width = config.code_width
    if np.any((c < 0) | (c >> width != 0)):
        bad = (c < 0) | (c >> width != 0)
        raise ValueError(f"codes must be in 0..{(1 << width) - 1}; got {c[bad]}")
    if config.engine in ("int8", "insitu"):
        return _scalar_or_array(np.where(c >> (width - 1) != 0, c - (1 << width), c))
    if config.engine == "binary":
        if not 0 <= round_ < width:
            raise ValueError(f"round {round_} must be in 0..{width - 1} (slot_bits = {width})")
        return _scalar_or_array(1 - 2 * ((c >> (width - 1 - round_)) & 1))
    e = config.exp_bits
    exp = c & ((1 << e) - 1)
    sign = (c >> e) & 1
    nonzero = (c >> (e + 1)) & 1
    return _scalar_or_array(nonzero * (1 - 2 * sign) * np.left_shift(1, exp))


def code_offset(config: AcceleratorConfig, code) -> int | np.ndarray:
    """How much the engine's term of a packed code falls short of ``value * act``: 1
    where the term is the one's complement of ``act << exp`` (``-(act << exp) - 1``),
    whatever ``act``, else 0: a shift-add code with ``nonzero`` and ``sign``. Other
    engines negate exactly (the binary engine's ``-act`` folds into its adders): 0.
    """
    c = _int_array(code, "codes")
    if config.engine == "shiftadd":
        e = config.exp_bits
        return _scalar_or_array((c >> e) & (c >> (e + 1)) & 1)
    return _scalar_or_array(np.zeros_like(c))


def engine_reference(config: AcceleratorConfig,
                     beats: Iterable[tuple[Sequence[int], Sequence[Sequence[int]], int, int]]
                     ) -> list[np.ndarray]:
    """Results of an engine fed ``beats``: the accumulators (int64 ``[lanes]``) at every
    beat with ``last``, in order.

    Parameters
    ----------
    config : AcceleratorConfig
    beats : iterable of (acts, codes, first, last)
        ``acts``: ``taps`` integers in ``0 .. 2**act_bits - 1``; ``codes``: ``lanes x taps``
        packed codes (see :func:`pack_code`); ``first``, ``last``: 0 or 1. The
        accumulators start at zero.

    Raises
    ------
    ValueError
        On a malformed beat, or if an accumulator leaves ``signed(acc_width)``: the
        engine is only specified where it cannot wrap.
    """
    acc = np.zeros(config.lanes, dtype=np.int64)
    lo, hi = -(1 << (config.acc_width - 1)), (1 << (config.acc_width - 1)) - 1
    results = []
    for n, beat in enumerate(beats):
        acts, codes, first, last = beat[:4]
        round_ = beat[4] if len(beat) > 4 else 0
        acts = _int_array(acts, f"beat {n}: acts")
        codes = _int_array(codes, f"beat {n}: codes")
        if acts.shape != (config.taps,) or codes.shape != (config.lanes, config.taps):
            raise ValueError(f"beat {n}: acts must have shape ({config.taps},) and codes "
                             f"({config.lanes}, {config.taps}); got {acts.shape}, {codes.shape}")
        if np.any((acts < 0) | (acts >> config.act_bits != 0)):
            raise ValueError(f"beat {n}: acts must be in 0..{(1 << config.act_bits) - 1}")
        if first not in (0, 1) or last not in (0, 1):
            raise ValueError(f"beat {n}: first and last must be 0 or 1")
        acc = (0 if first else acc) + code_value(config, codes, round_) @ acts \
            - code_offset(config, codes).sum(axis=1)
        if np.any((acc < lo) | (acc > hi)):
            raise ValueError(f"beat {n}: accumulator {acc} overflows signed({config.acc_width}); "
                             f"the dot product is longer than max_fan_in allows")
        if last:
            results.append(acc.copy())
    return results
