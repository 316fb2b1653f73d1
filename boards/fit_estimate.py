"""The cheap pre-filter of ``--fit``: which candidate engines cannot fit a board,
told without placing and routing them.

Two estimates, neither of them ever reported as a measured figure (the engine
``--fit`` chooses is always placed and routed for real):

* **memories**: :func:`~shiftpool.boards.memory_fit.board_memory_fit` (block RAM and
  SPRAM of accelerator plus link, checked against yosys in ``tests/test_mnist.py``);
* **logic and DSPs**: the device minus its engine does not change much with the
  engine's size, so a candidate needs about what a *reference* needs (the smallest
  candidate, placed and routed for real: its logic cells and DSPs as nextpnr counts
  them) plus the difference of the two engines alone. An engine alone is synthesized
  flat (yosys only, seconds; on ECP5 with :data:`ENGINE_SYNTH_OPTIONS`) at 1 and 2
  lanes for the candidate's taps, and lanes
  cost the same each beyond the first (the lanes are copies; what they share is in
  the first), so ``engine(l) = engine(1) + (l - 1) * (engine(2) - engine(1))``. The
  engines' counts are cached in ``OUT/fit/engines.json`` (keyed by the synthesis
  command, the engine's configuration hash and the gateware's digest).

A candidate is rejected when an estimate exceeds the device. The logic estimate is
a lower bound as far as the controller does not shrink for a larger engine (its
activation gathering and write-back grow with lanes and taps; the write-back's word
path, which ``fit_config`` picks for a larger engine whose lane-by-lane writes would
stall, adds a bias adder and a requantizer per lane, about 170 LUT4 each on iCE40,
which a reference without it does not count) and each added LUT4
takes a logic cell of its own, so it can let through a candidate that then fails in
nextpnr, which costs a build but never the right answer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from .board import Board
from .memory_fit import board_memory_fit
from .units import board_synth, synth_cells

__all__ = ["LOGIC_CELLS", "DSP_CELLS", "ENGINE_SYNTH_OPTIONS", "EngineCost", "engine_cost",
           "logic_verdict", "memory_verdict"]

#: Per family: cell type -> logic cells (nextpnr's ``logic`` column) it takes. On
#: iCE40 a carry shares its LUT's cell; an ECP5 CCU2C is two TRELLIS_COMB.
LOGIC_CELLS = {
    "ice40": {"SB_LUT4": 1},
    "ecp5": {"LUT4": 1, "CCU2C": 2},
    "gowin": {"LUT1": 1, "LUT2": 1, "LUT3": 1, "LUT4": 1, "ALU": 1},
}
#: Per family: the DSP cell types.
DSP_CELLS = {"ice40": ("SB_MAC16",), "ecp5": ("MULT18X18D",), "gowin": ("MULT",)}
#: Per family: options added to the board's synthesis command for an engine alone.
#: On ECP5, YoWASP's yosys 0.70 ends ``synth_ecp5`` without a message inside ABC9 on
#: most shift-add engines alone (the 1-tap ones, and the digits model's at 1, 4 and 8
#: taps; the whole device synthesizes); with ``-dff`` (ABC9 maps the flip-flops too)
#: they synthesize, and engines that synthesize both ways differ by at most 5%
#: (shift-add 1 x 2: 396 / 397 logic cells, 2 x 4: 1214 / 1157; int8 2 x 4: 367 / 368;
#: pool 1 x 8: 805 / 828, the demo's configurations).
ENGINE_SYNTH_OPTIONS = {"ecp5": "-dff"}


@dataclasses.dataclass(frozen=True)
class EngineCost:
    """An engine's logic cells and DSPs (synthesized alone, or extrapolated)."""

    logic: float
    dsp: float


def memory_verdict(board: Board, config) -> str | None:
    """Why ``config``'s memories do not fit ``board`` (the estimate's message), or
    ``None``."""
    fit = board_memory_fit(board, config)
    return None if fit.fits else f"memory estimate: {fit.message}"


def _engine_synth(board: Board) -> tuple[str, str]:
    """``(family, synthesis command)`` of an engine alone on ``board``."""
    family, synth = board_synth(board)
    extra = ENGINE_SYNTH_OPTIONS.get(family)
    return family, f"{synth.rstrip()} {extra}" if extra else synth


def _synthesize(board: Board, rtlil_text: str) -> EngineCost:
    family, synth = _engine_synth(board)
    cells = next(iter(synth_cells(rtlil_text, synth=synth, flatten=True).values()))
    logic = sum(n * LOGIC_CELLS[family].get(cell, 0) for cell, n in cells.items())
    dsp = sum(n for cell, n in cells.items() if cell.startswith(DSP_CELLS[family]))
    return EngineCost(logic, dsp)


def _engine_rtlil(config) -> str:
    from amaranth.back import rtlil

    from ..hw.engines.common import make_engine

    return rtlil.convert(make_engine(config), name="top")


def engine_cost(board: Board, config, cache_path: Path,
                say: Callable[[str], None] = lambda text: None) -> EngineCost:
    """The engine of ``config`` on ``board``, extrapolated from its 1- and 2-lane
    syntheses (each cached in ``cache_path`` by the synthesis command and a digest of
    the engine's RTLIL: the memory depths of two candidates differ, their engines
    need not)."""
    family, synth = _engine_synth(board)
    try:
        cache = json.loads(Path(cache_path).read_text())
    except (FileNotFoundError, ValueError):
        cache = {}
    costs = []
    for lanes in (1, 2):
        text = _engine_rtlil(dataclasses.replace(config, lanes=lanes))
        key = f"{synth}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"
        if key not in cache:
            say(f"engine estimate: {config.engine} {lanes}x{config.taps} alone (yosys)")
            cache[key] = dataclasses.asdict(_synthesize(board, text))
            Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(cache_path).with_suffix(".tmp")
            tmp.write_text(json.dumps(cache, indent=1) + "\n")
            os.replace(tmp, cache_path)
        costs.append(EngineCost(**cache[key]))
    first, second = costs
    extra = config.lanes - 1
    return EngineCost(first.logic + extra * (second.logic - first.logic),
                      first.dsp + extra * (second.dsp - first.dsp))


def logic_verdict(reference: dict, ref_engine: EngineCost, engine: EngineCost) -> str | None:
    """Why a candidate whose engine costs ``engine`` does not fit, from the
    ``reference`` build's report (placed and routed, engine ``ref_engine``), or
    ``None``."""
    res = reference["resources"]
    why = []
    for column, name, want in (("logic", "logic cells", engine.logic - ref_engine.logic),
                               ("dsp", "DSP blocks", engine.dsp - ref_engine.dsp)):
        if column not in res:
            continue
        need = res[column]["used"] + want
        if need > res[column]["available"]:
            why.append(f"about {need:.0f} {name} ({res[column]['bel']}), "
                       f"{res[column]['available']} available")
    if not why:
        return None
    return (f"logic estimate ({reference['lanes']}x{reference['taps']} placed and routed "
            f"plus the engines' difference): " + "; ".join(why))
