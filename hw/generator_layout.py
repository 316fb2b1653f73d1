"""Bit layouts of the MLG weight generator (``hw/engines/generator.py``), shared with the
compiler (``sw/compile/mlg_layout.py``).

Plain Python (no amaranth), so the host side can pack the generator's stores and
requests. ``docs/arithmetic.md`` section 14.4 describes the stores and the request.

The generator reads four stores (``mlg_v_depth`` .. ``mlg_w1_depth`` rows deep).
A layer's weight row ``(g, s)`` is ``taps`` inputs of the dot product for ``lanes``
filters; tap ``j`` of step ``s`` is input channel ``ci`` at kernel position ``k``
(``hw/engines/generator.py``: *grouped* steps, as the controller reads a grouped map,
``s = G*9 + k`` with ``ci = G*taps + j``; *flat* steps, a dense layer or an im2col
first layer, flattened input ``s*taps + j = ci*kk + k``):

``v``
    Row ``(g, c)``: ``V[g*lanes + l, c]`` for ``l = 0 .. lanes-1`` (level 2).
``u``
    Row ``(c, t)``: for each tap ``j``, ``U[c, ci_j, b]`` at index ``j*mlg_bi + b``,
    where ``t`` is the step's channel group ``G`` (grouped) or the step ``s`` itself
    (flat), and ``ci_j`` tap ``j``'s channel (0 for a tap past the fan-in).
``b``
    Row ``c``: ``B[c, b, k]`` at index ``b*9 + k`` (level 1).
``w1``
    Row ``(c, s)``: the stored ``W1[c, ci_j, k_j]`` at index ``j`` (level 1 off; 0 past
    the fan-in).

Every value is a signed field of its width's ``q + 1`` bits, packed LSB first.
"""

from __future__ import annotations

from .config import KERNEL_TAPS, AcceleratorConfig
from .program import addr_width, count_width, mlg_a_depth

__all__ = ["GEN_LATENCY", "STORES", "request_fields", "row_cycles",
           "store_depths", "store_layouts", "store_widths"]

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
        "u": (cfg.taps * cfg.mlg_bi, cfg.mlg_qu + 1),
        "b": (cfg.mlg_bi * KERNEL_TAPS, cfg.mlg_qb + 1),
        "w1": (cfg.taps, cfg.mlg_qu + 1),
    }


def store_widths(cfg: AcceleratorConfig) -> dict[str, int]:
    """Bits in one row of each store."""
    return {name: n * w for name, (n, w) in store_layouts(cfg).items()}


def store_depths(cfg: AcceleratorConfig) -> dict[str, int]:
    """Rows of each store (the config's ``mlg_*_depth`` fields)."""
    return {name: getattr(cfg, f"mlg_{name}_depth") for name in STORES}


def request_fields(cfg: AcceleratorConfig) -> list[tuple[str, int]]:
    """Fields of one generator request (one weight row), LSB first.

    ``level1`` and ``level2`` say which levels the layer uses, ``grouped`` how its
    steps read the input (module docstring); ``count`` is the iterations: ``Bc``
    (level 2) or the group's valid lanes (level 2 off). Iteration ``n`` reads ``v``
    row ``v_addr + n``, ``b`` row ``b_addr + n``, and ``u`` (or ``w1``) row ``a_addr +
    n*a_stride``. ``k0`` is the kernel position (``0..8``) of the row's tap 0: every
    tap's (grouped) or tap ``j``'s ``(k0 + j) mod 9`` (flat).
    """
    return [
        ("level1", 1),
        ("level2", 1),
        ("grouped", 1),
        ("count", count_width(max(cfg.mlg_bc, cfg.lanes))),
        ("v_addr", addr_width(cfg.mlg_v_depth)),
        ("a_addr", addr_width(mlg_a_depth(cfg))),
        ("a_stride", count_width(mlg_a_depth(cfg))),
        ("b_addr", addr_width(cfg.mlg_b_depth)),
        ("k0", count_width(KERNEL_TAPS - 1)),
    ]


def row_cycles(count: int) -> int:
    """Cycles between two weight rows of the generator when its output is always
    taken and requests are always offered: ``count + GEN_LATENCY``."""
    return count + GEN_LATENCY
