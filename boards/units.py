"""Where the logic goes: cells by unit (link, controller, engine, memories) and by
module, from yosys' per-module statistics. One module, two uses:

* :func:`~shiftpool.boards.build.build` runs a second synthesis of the board's design
  with ``-noflatten`` and ``stat -json`` (:func:`units_script`, ``build/units.json``)
  and counts each module's own cells into the unit its hierarchy path names
  (:func:`units_from_stat`): ``report.json``'s ``units`` and the table ``build`` prints;
* :func:`module_stat` synthesizes one component alone (the host link, an engine) the
  same way; :func:`link_luts` is the host link's share in a board's configuration,
  which ``tests/test_link_budget.py`` bounds. The command line::

      python -m shiftpool.boards.units [--part link|engine|accelerator]
                                       [--board icebreaker] [--lanes 2] [--taps 4]
                                       [--engine shiftadd] [--model M.npz]

  prints ``LUT4  RAM  DSP  module`` for every module of that part and the total (for
  the accelerator also the LUT4 of each unit: controller, engine, memories).

The attribution goes by path prefix, so it follows the gateware's submodule names
rather than a list of modules:

* ``engine``: below the accelerator's ``engine`` submodule;
* ``memories``: the accelerator's block RAM and SPRAM cells, and the logic of its
  ``*_mem`` submodules (at any depth: the memory bank's);
* ``controller``: the rest of the accelerator;
* ``link``: below the device's ``link`` submodule (its FIFO and frame buffer RAMs
  included);
* ``other``: what is left (board top, clock and reset, I/O buffers).

The flattened build optimizes across module boundaries, so the units' sum is close
to, not equal to, the whole design's count (``report.json`` has both).

Unflattened, yosys 0.70's ABC9 asserts (``count_id(wire->name) == 0`` in
``rtlil.cc``) on a module with a wire ``words`` beside wires ``words[0]``, ... (an
Amaranth list of signals next to a signal of the same name, as the max-pool unit has
at 2 lanes x 4 taps): reading ABC's result back, yosys takes ``words`` for bit 0 of a
wide wire, renames it ``words[0]`` and collides (YosysHQ/yosys#4349). The flat build
does not meet it, since flattening prefixes the names. :func:`units_script` therefore
makes the bracketed names private (``rename -hide``) before synthesis: names only,
the logic is the same. Should the pass still fail, a build reports ``units_error``
rather than failing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import types
from pathlib import Path

from ..hw.config import DEFAULT_LANES, DEFAULT_TAPS
from .board import BoardError
from .tools import run_tool

__all__ = ["HIDE_INDEXED_NAMES", "UNITS", "UNIT_CELLS", "board_synth", "demo_sized_config",
           "link_luts", "main", "module_stat", "synth_cells", "unit_of", "units_from_stat",
           "units_script"]

#: Units, in the order tables show them.
UNITS = ("link", "controller", "engine", "memories", "other")
#: Per family: column -> cell-type prefixes counted in it.
UNIT_CELLS = {
    "ice40": {"lut": ("SB_LUT4",), "ff": ("SB_DFF",), "bram": ("SB_RAM40_4K",),
              "spram": ("SB_SPRAM256KA",), "dsp": ("SB_MAC16",)},
    "ecp5": {"lut": ("LUT4",), "ff": ("TRELLIS_FF",), "bram": ("DP16KD",),
             "spram": (), "dsp": ("MULT18X18D",)},
    "gowin": {"lut": ("LUT1", "LUT2", "LUT3", "LUT4"), "ff": ("DFF",),
              "bram": ("SP", "SDPB", "DPB", "DP"), "spram": (), "dsp": ("MULT",)},
}
#: Makes ``words[0]``-style wire names private, so that ABC9 does not collide them
#: with a wire ``words`` in an unflattened synthesis (YosysHQ/yosys#4349).
HIDE_INDEXED_NAMES = "rename -hide w:*[[]*]"
#: Columns whose cells are memories: in the accelerator they count as ``memories``.
_MEMORY_COLUMNS = ("bram", "spram")


def unit_of(path: str) -> str:
    """The unit of a module by its hierarchy path (``top.device.accelerator.engine``,
    with ``.`` or ``/`` between names)."""
    names = path.lstrip("\\").replace("/", ".").split(".")
    if "accelerator" in names:
        below = names[names.index("accelerator") + 1:]
        if below and below[0] in ("engine", "generate"):
            # The in-situ engine's weight generator and its request counters are part
            # of the engine (hw/controller/generate.py).
            return "engine"
        if any(name.endswith("_mem") for name in below):
            # The memories, in the memory bank (hw/controller/memory_bank.py) or not.
            return "memories"
        return "controller"
    if "link" in names:
        return "link"
    return "other"


def units_script(top_ys: str) -> str:
    """The per-module statistics script from the build's ``top.ys``: the same reads
    and synthesis with ``-noflatten`` (bracketed wire names made private first, see
    the module's docstring), ``stat -json`` into ``units.json``, no netlist."""
    out = []
    for line in top_ys.splitlines():
        word = line.strip().split(" ", 1)[0]
        if word.startswith("synth_"):
            out.append(HIDE_INDEXED_NAMES)
            out.append(f"{line.rstrip()} -noflatten")
            out.append("tee -q -o units.json stat -json")
        elif word in ("write_json", "tee"):
            continue
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def _read_stat(stat_path: Path) -> dict:
    """``{module name: {cell type: count}}`` from a ``stat -json`` file (yosys writes
    its log header before the JSON object when tee'd), names without yosys' ``\\``."""
    text = Path(stat_path).read_text()
    modules = json.loads(text[text.index("{"):])["modules"]
    return {name.lstrip("\\"): {cell.lstrip("\\"): int(n) for cell, n in
                                mod.get("num_cells_by_type", {}).items()}
            for name, mod in modules.items()}


def _column(cell: str, family: str) -> str | None:
    for column, prefixes in UNIT_CELLS[family].items():
        if cell.startswith(prefixes):
            return column
    return None


def _own_cells(modules: dict, family: str) -> dict[str, dict[str, int]]:
    """Per module, its own cells by column: instances of the design's own modules are
    not cells of their parent (each module is counted once: Amaranth makes one module
    per instance)."""
    columns = tuple(UNIT_CELLS[family])
    own = {}
    for name, cells in modules.items():
        counts = dict.fromkeys(columns, 0)
        for cell, n in cells.items():
            column = None if cell in modules else _column(cell, family)
            if column is not None:
                counts[column] += n
        own[name] = counts
    return own


def units_from_stat(stat_path: Path, family: str) -> dict:
    """``{unit: {column: count}}`` from yosys' ``stat -json`` of a ``-noflatten``
    synthesis of a board's design."""
    columns = tuple(UNIT_CELLS[family])
    units = {u: dict.fromkeys(columns, 0) for u in UNITS}
    for name, counts in _own_cells(_read_stat(stat_path), family).items():
        unit = unit_of(name)
        for column, n in counts.items():
            where = "memories" if column in _MEMORY_COLUMNS and unit == "controller" else unit
            units[where][column] += n
    return units


def module_stat(component, *, family: str = "ice40", synth: str = "synth_ice40 -device u -dsp",
                flatten: bool = False, top: str = "top", where: Path | None = None,
                device: str | None = None) -> dict[str, dict[str, int]]:
    """Cells of ``component`` synthesized alone with ``synth``: ``{module name:
    {column: count}}`` (columns of :data:`UNIT_CELLS` ``[family]``, each module's own
    cells, names as yosys prints them, ``top.core.handler``); one module ``top`` when
    ``flatten``.

    Raises
    ------
    BoardError
        yosys fails (its last line).
    """
    return _own_cells(synth_cells(component, synth=synth, flatten=flatten, top=top,
                                  where=where, device=device), family)


def synth_cells(component, *, synth: str, flatten: bool = False, top: str = "top",
                where: Path | None = None, device: str | None = None
                ) -> dict[str, dict[str, int]]:
    """Cells by type of every module of ``component`` (or its RTLIL text, top module
    ``top``) synthesized alone with ``synth``: ``{module name: {cell type: count}}``;
    elaborated for a platform of FPGA ``device`` if given (the memories that ask for
    SPRAM on an iCE40 UltraPlus do only then).
    yosys reads RTLIL, as the board build does: reading the same design as Verilog
    costs far more (a memory's initial rows are a line each)."""
    # what the gateware asks of a platform: its device (hw/memories.has_spram)
    platform = types.SimpleNamespace(device=device) if device else None
    if not isinstance(component, str):
        from amaranth.back import rtlil

        component = rtlil.convert(component, name=top, platform=platform)
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp) if where is None else Path(where)
        (where / "design.il").write_text(component)
        synth = f"{synth} -top {top}" if flatten else \
            f"{HIDE_INDEXED_NAMES}; {synth} -top {top} -noflatten"
        if platform is not None:
            from ..hw.memories import DROP_INIT, has_spram

            if has_spram(platform):    # an SPRAM has no initial contents
                synth = f"{DROP_INIT}; {synth}"
        proc = run_tool("yosys", ["-q", "-p", f"read_rtlil design.il; {synth}; "
                                  f"tee -q -o stat.json stat -json"], where)
        if proc.returncode != 0:
            # YoWASP's ABC9 can end yosys without a word (fit_estimate's
            # ENGINE_SYNTH_OPTIONS)
            said = (proc.stderr or proc.stdout).strip()[-300:] or \
                f"exit status {proc.returncode}, no message"
            raise BoardError(f"yosys failed: {said}")
        return _read_stat(where / "stat.json")


def demo_sized_config(lanes: int = DEFAULT_LANES, taps: int = DEFAULT_TAPS,
                      engine: str = "shiftadd"):
    """An accelerator configuration with the memories of the digits demo's fitted
    design (``fit_config(model, lanes, taps)``), without training the model."""
    from ..hw.config import AcceleratorConfig

    # as fit_config makes them for the built-in digits models at 2 x 4
    return AcceleratorConfig(engine=engine, lanes=lanes, taps=taps, max_fan_in=72,
                             act_depth=512, weight_depth=257 if engine == "shiftadd" else 236,
                             tap_depth=37, bias_depth=17,
                             program_depth=5, out_depth=10, max_dim=8,
                             exp_bits=3 if engine == "shiftadd" else 1)


def board_synth(board) -> tuple[str, str]:
    """``(family, synth command)`` of ``board``, as its builds synthesize."""
    from .build import synth_options

    return board.family, f"synth_{board.family} {synth_options(board)[0]}"


def link_luts(config, board: str = "icebreaker", baud: int = 115_200
              ) -> dict[str, tuple[int, int]]:
    """``{module: (LUT4, block RAMs)}`` of the host link alone for ``config`` with
    ``board``'s link settings and clock."""
    from ..hw.link import LinkConfig, UARTLink
    from .registry import get_board

    board = get_board(board)
    link = LinkConfig.for_baud(board.clock_hz, baud, **board.link_fields)
    family, synth = board_synth(board)
    stat = module_stat(UARTLink(config, link), family=family, synth=synth)
    return {name: (cells["lut"], cells["bram"]) for name, cells in stat.items()}


def main(argv=None) -> int:
    from ..hw.config import ConfigError
    from .registry import get_board

    parser = argparse.ArgumentParser(prog="python -m shiftpool.boards.units",
                                     description="cells per module of the host link or "
                                     "an engine, synthesized alone for a board")
    parser.add_argument("--part", choices=("link", "engine", "accelerator"), default="link")
    parser.add_argument("--board", default="icebreaker")
    parser.add_argument("--lanes", type=int, default=DEFAULT_LANES)
    parser.add_argument("--taps", type=int, default=DEFAULT_TAPS)
    parser.add_argument("--engine", default="shiftadd")
    parser.add_argument("--model", metavar="MODEL.npz",
                        help="size the design for this model (fit_config(model, lanes, "
                        "taps); its scheme's engine) instead of the digits demo")
    args = parser.parse_args(argv)
    try:
        board = get_board(args.board)
        if args.model:
            from ..sw.compile.fit import fit_config
            from ..sw.model.file import ModelError, read_model

            try:
                model = read_model(Path(args.model))
            except (OSError, ModelError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            config = fit_config(model, lanes=args.lanes, taps=args.taps)
        else:
            config = demo_sized_config(args.lanes, args.taps, args.engine)
        if args.part == "link":
            from ..hw.link import LinkConfig, UARTLink

            part = UARTLink(config, LinkConfig.for_baud(board.clock_hz, 115_200,
                                                        **board.link_fields))
        elif args.part == "engine":
            from ..hw.engines.common import make_engine

            part = make_engine(config)
        else:
            from ..hw.accelerator import Accelerator

            part = Accelerator(config)
        family, synth = board_synth(board)
        # the accelerator named as in a board's design, so that unit_of attributes
        # its modules
        rows = module_stat(part, family=family, synth=synth, device=board.device,
                           top="accelerator" if args.part == "accelerator" else "top")
    except (BoardError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'LUT4':>5} {'RAM':>4} {'DSP':>4}  module  ({synth}, -noflatten)")
    for name, cells in sorted(rows.items()):
        print(f"{cells['lut']:5d} {cells['bram'] + cells['spram']:4d} {cells['dsp']:4d}  {name}")
    total = {c: sum(r[c] for r in rows.values()) for c in ("lut", "bram", "spram", "dsp")}
    print(f"{total['lut']:5d} {total['bram'] + total['spram']:4d} {total['dsp']:4d}  "
          f"{args.part} total")
    if args.part == "accelerator":
        for unit in ("controller", "engine", "memories"):
            print(f"{sum(r['lut'] for n, r in rows.items() if unit_of(n) == unit):5d}"
                  f"            {unit}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
