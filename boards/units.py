"""Where the logic goes: utilization by unit (link, controller, engine, memories)
from yosys' per-module statistics.

:func:`build` runs a second synthesis of the same design with ``-noflatten`` and
``stat -json`` (``build/units.json``); each module's own cells are counted into the
unit its hierarchy path names. The attribution goes by path prefix, so it follows the
gateware's submodule names rather than a list of modules:

* ``engine``: below the accelerator's ``engine`` submodule;
* ``memories``: the accelerator's block RAM and SPRAM cells, and the logic of its
  ``*_mem`` submodules;
* ``controller``: the rest of the accelerator;
* ``link``: below the device's ``link`` submodule (its FIFO and frame buffer RAMs
  included);
* ``other``: what is left (board top, clock and reset, I/O buffers).

The flattened build optimizes across module boundaries, so the units' sum is close
to, not equal to, the whole design's count (``report.json`` has both).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["UNITS", "UNIT_CELLS", "unit_of", "units_from_stat", "units_script"]

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
#: Columns whose cells are memories: in the accelerator they count as ``memories``.
_MEMORY_COLUMNS = ("bram", "spram")


def unit_of(path: str) -> str:
    """The unit of a module by its hierarchy path (``top.device.accelerator.engine``,
    with ``.`` or ``/`` between names)."""
    names = path.lstrip("\\").replace("/", ".").split(".")
    if "accelerator" in names:
        below = names[names.index("accelerator") + 1:]
        if below and below[0] == "engine":
            return "engine"
        if below and below[0].endswith("_mem"):
            return "memories"
        return "controller"
    if "link" in names:
        return "link"
    return "other"


def units_script(top_ys: str) -> str:
    """The per-module statistics script from the build's ``top.ys``: the same reads
    and synthesis with ``-noflatten``, ``stat -json`` into ``units.json``, no netlist."""
    out = []
    for line in top_ys.splitlines():
        word = line.strip().split(" ", 1)[0]
        if word.startswith("synth_"):
            out.append(f"{line.rstrip()} -noflatten")
            out.append("tee -q -o units.json stat -json")
        elif word in ("write_json", "tee"):
            continue
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def _column(cell: str, family: str) -> str | None:
    for column, prefixes in UNIT_CELLS[family].items():
        if cell.startswith(prefixes):
            return column
    return None


def units_from_stat(stat_path: Path, family: str) -> dict:
    """``{unit: {column: count}}`` from yosys' ``stat -json`` of a ``-noflatten``
    synthesis. Instances of the design's own modules are not cells of their parent
    (each module is counted once, in its own unit: Amaranth makes one module per
    instance)."""
    text = Path(stat_path).read_text()
    modules = json.loads(text[text.index("{"):])["modules"]
    own = {name.lstrip("\\") for name in modules}
    columns = tuple(UNIT_CELLS[family])
    units = {u: dict.fromkeys(columns, 0) for u in UNITS}
    for name, module in modules.items():
        unit = unit_of(name)
        for cell, n in module.get("num_cells_by_type", {}).items():
            if cell.lstrip("\\") in own:
                continue
            column = _column(cell.lstrip("\\"), family)
            if column is None:
                continue
            where = "memories" if column in _MEMORY_COLUMNS and unit == "controller" else unit
            units[where][column] += int(n)
    return units
