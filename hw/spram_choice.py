"""Which of the accelerator's single-port memories ask for SPRAM on an iCE40 UltraPlus.

An iCE40UP5K has 4 SPRAMs (16384 x 16, one port each) and 30 block RAMs (EBR, 4 kbit,
256 x 16 down to 2048 x 2). A memory whose reads and writes share one address
(:class:`~shiftpool.hw.memories.SinglePortMemory`) can go to either; the candidates,
by the names the memory estimate gives them (``sw/compile/resources.py``):

* ``"weights"``: the weight region (every engine but the in-situ one);
* ``"indices"``: the pool engine's index region;
* ``"lut"``: the pool engine's full lookup tables, one copy per lane (all or none);
* ``"generated rows"``: the in-situ engine's row buffer.

An SPRAM holds 64 EBR's worth of bits but is 16 bits wide, so a wide and shallow memory
(an int8 layer's 128-bit weight rows, 65 of them) fills 8 SPRAMs where 8 EBR do, while
a narrow and deep one (a pool model's 12-bit indices, 4900 of them: 15 EBR) takes one.
:func:`spram_memories` picks the set of candidates that saves the most EBR within
:data:`SPRAM_COUNT` SPRAMs (the fewer SPRAMs on a tie). A memory small enough for yosys
to keep in logic (no more bits than 64 per EBR it would take) saves its bits / 64.

It is a function of the configuration alone, so the gateware, which asks for SPRAM
(``ram_style = "huge"``) on an iCE40 UltraPlus platform, and the host's estimate agree.
This module needs no amaranth.
"""

from __future__ import annotations

import itertools

from .config import AcceleratorConfig
from .memory_map import region_depths, region_widths

__all__ = ["ICE40_EBR_MODES", "ICE40_SPRAM_MODE", "EBR_LOGIC_COST", "SPRAM_COUNT",
           "single_port_memories", "spram_memories"]

#: iCE40 EBR (SB_RAM40_4K) aspect ratios, ``(depth, width)``.
ICE40_EBR_MODES = ((256, 16), (512, 8), (1024, 4), (2048, 2))
#: iCE40 UltraPlus SPRAM (SB_SPRAM256KA): ``(depth, width)``.
ICE40_SPRAM_MODE = (16384, 16)
#: yosys' cost of one iCE40 EBR in logic bits (``share/ice40/brams.txt``): a memory of
#: no more bits than this per EBR stays in flip-flops.
EBR_LOGIC_COST = 64
#: SPRAM blocks of an iCE40UP5K.
SPRAM_COUNT = 4


def _blocks(modes, width: int, depth: int) -> int:
    return min(-(-width // w) * -(-depth // d) for d, w in modes)


def single_port_memories(cfg: AcceleratorConfig) -> list[tuple[str, int, int, int]]:
    """``(name, width, depth, copies)`` of each memory of ``cfg`` that may go to SPRAM."""
    widths, depths = region_widths(cfg), region_depths(cfg)
    found = []
    if depths["weights"] and widths["weights"]:
        found.append(("weights", widths["weights"], depths["weights"], 1))
    if cfg.engine == "insitu":
        # one layer's generated weight rows, as wide as a weight row
        found.append(("generated rows", cfg.lanes * cfg.taps * cfg.code_width,
                      cfg.weight_depth, 1))
    if cfg.engine == "pool":
        found.append(("indices", widths["indices"], depths["indices"], 1))
        if cfg.pool_table == "full":
            found.append(("lut", cfg.lut_bits, 256 * cfg.pool_size, cfg.lanes))
    return found


def _ebr_saved(width: int, depth: int, copies: int) -> float:
    """EBR a memory takes (its bits / 64 for one yosys keeps in logic)."""
    blocks = _blocks(ICE40_EBR_MODES, width, depth)
    if width * depth <= blocks * EBR_LOGIC_COST:
        return copies * width * depth / EBR_LOGIC_COST
    return copies * blocks


def spram_memories(cfg: AcceleratorConfig, spram_count: int = SPRAM_COUNT) -> frozenset[str]:
    """The names of the memories of ``cfg`` that ask for SPRAM (module docstring)."""
    found = single_port_memories(cfg)
    best, best_key = frozenset(), (0.0, 0)
    for n in range(1, len(found) + 1):
        for subset in itertools.combinations(found, n):
            sprams = sum(c * _blocks((ICE40_SPRAM_MODE,), w, d) for _, w, d, c in subset)
            if sprams > spram_count:
                continue
            key = (sum(_ebr_saved(w, d, c) for _, w, d, c in subset), -sprams)
            if key > best_key:
                best, best_key = frozenset(name for name, *_ in subset), key
    return best
