"""Bit layouts of the MLG weight generator (``hw/engines/generator.py``), shared with the
compiler (``sw/compile/mlg_layout.py``).

Plain Python (no amaranth), so the host side can pack the generator's stores and
requests. ``docs/arithmetic.md`` section 14.4 describes the stores and the request.

The generator reads four stores, each ``mlg_depth`` rows deep:

``v``
    Row ``(g, c)``: ``V[g*lanes + l, c]`` for ``l = 0 .. lanes-1`` (level 2).
``u``
    Row ``(c, ci)``: ``U[c, ci, b]`` for ``b = 0 .. mlg_bi-1`` (level 1).
``b``
    Row ``c``: ``B[c, b, k]`` at index ``b*9 + k`` (level 1).
``w1``
    Row ``(c, s)``: the stored ``W1[c]`` (flattened ``Ci*kk``) at ``s*taps + j`` for
    ``j = 0 .. taps-1`` (level 1 off).

Every value is a signed field of its width's ``q + 1`` bits, packed LSB first.
"""

from __future__ import annotations

from .config import KERNEL_TAPS, AcceleratorConfig
from .program import addr_width, count_width

__all__ = ["GEN_LATENCY", "STORES", "request_fields", "row_cycles", "store_layouts",
           "store_widths", "u_ports"]

#: The generator's stores, in the order of their load codes.
STORES = ("v", "u", "b", "w1")

#: Cycles a weight row takes beyond its ``count`` iterations: the request's accept,
#: the store read, and the level-1 register (the final accumulate is in the output's
#: cycle).
GEN_LATENCY = 3


def store_layouts(cfg: AcceleratorConfig) -> dict[str, tuple[int, int]]:
    """Per store: ``(values per row, signed bits per value)``."""
    return {
        "v": (cfg.lanes, cfg.mlg_qv + 1),
        "u": (cfg.mlg_bi, cfg.mlg_qu + 1),
        "b": (cfg.mlg_bi * KERNEL_TAPS, cfg.mlg_qb + 1),
        "w1": (cfg.taps, cfg.mlg_qu + 1),
    }


def store_widths(cfg: AcceleratorConfig) -> dict[str, int]:
    """Bits in one row of each store."""
    return {name: n * w for name, (n, w) in store_layouts(cfg).items()}


def u_ports(cfg: AcceleratorConfig) -> int:
    """Read ports of the ``u`` store: the most input channels ``taps`` consecutive
    positions of a flattened 3x3 layer touch, ``floor((taps + 7) / 9) + 1``."""
    return (KERNEL_TAPS - 1 + cfg.taps - 1) // KERNEL_TAPS + 1


def request_fields(cfg: AcceleratorConfig) -> list[tuple[str, int]]:
    """Fields of one generator request (one weight row), LSB first.

    ``level1`` and ``level2`` say which levels the layer uses; ``count`` is the
    iterations: ``Bc`` (level 2) or the group's valid lanes (level 2 off). Iteration
    ``n`` reads ``v`` row ``v_addr + n``, ``b`` row ``b_addr + n``, and ``u`` rows
    ``a_addr + n*a_stride + d`` (``d = 0 .. u_ports-1``) or ``w1`` row ``a_addr +
    n*a_stride``. ``k0`` is the kernel position (``0..8``) of the row's tap 0,
    ``taps_valid`` the taps below the layer's fan-in (level 1 zeroes the others).
    """
    depth = addr_width(cfg.mlg_depth)
    return [
        ("level1", 1),
        ("level2", 1),
        ("count", count_width(max(cfg.mlg_bc, cfg.lanes))),
        ("v_addr", depth),
        ("a_addr", depth),
        ("a_stride", count_width(cfg.mlg_depth)),
        ("b_addr", depth),
        ("k0", count_width(KERNEL_TAPS - 1)),
        ("taps_valid", count_width(cfg.taps)),
    ]


def row_cycles(count: int) -> int:
    """Cycles between two weight rows of the generator when its output is always
    taken and requests are always offered: ``count + GEN_LATENCY``."""
    return count + GEN_LATENCY
