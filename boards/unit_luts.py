"""LUT4 per module of a design, from yosys' per-module statistics, and the host link's
share in the iCEBreaker configuration:

    python -m shiftpool.boards.unit_luts [--lanes 2] [--taps 4] [--engine shiftadd]

synthesizes the host link (:class:`~shiftpool.hw.link.link.UARTLink`) alone with the
iCEBreaker's link settings (24 MHz, 115200 baud, ``Board.link_fields``) for a
configuration the size of the digits demo, with ``synth_ice40 -device u -dsp
-noflatten``, and prints ``LUT4  EBR  module`` for every module and the total.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from .board import BoardError
from .tools import run_tool

__all__ = ["demo_sized_config", "link_luts", "module_stat"]


def module_stat(component, *, top: str = "top", synth: str = "synth_ice40 -device u -dsp",
                where: Path | None = None) -> dict[str, dict[str, int]]:
    """Cells by type of every module of ``component`` after ``synth -noflatten``:
    ``{module name: {cell type: count}}`` (module names as yosys prints them,
    ``top.core.handler``)."""
    from amaranth.back import verilog

    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp) if where is None else Path(where)
        (where / "design.v").write_text(verilog.convert(component, name=top))
        # Verilog, not RTLIL: yosys 0.5x's abc9 asserts on some -noflatten RTLIL designs.
        proc = run_tool("yosys", ["-q", "-p", f"read_verilog design.v; {synth} -noflatten "
                                  f"-top {top}; tee -q -o stat.json stat -json"], where)
        if proc.returncode != 0:
            raise BoardError(f"yosys failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
        stat = json.loads((where / "stat.json").read_text())
    return {name.lstrip("\\"): {cell: int(n) for cell, n in
                                mod.get("num_cells_by_type", {}).items()}
            for name, mod in stat["modules"].items()}


def demo_sized_config(lanes: int = 2, taps: int = 4, engine: str = "shiftadd"):
    """An accelerator configuration with the memories of the digits demo's fitted
    design (``fit_config(model, lanes, taps)``), without training the model."""
    from ..hw.config import AcceleratorConfig

    # as fit_config makes them for the built-in digits models at 2 x 4
    return AcceleratorConfig(engine=engine, lanes=lanes, taps=taps, max_fan_in=72,
                             act_depth=512, weight_depth=257 if engine == "shiftadd" else 236,
                             tap_depth=37, bias_depth=17,
                             program_depth=5, out_depth=10, max_dim=8,
                             exp_bits=3 if engine == "shiftadd" else 1)


def link_luts(config, board: str = "icebreaker", clock_hz: float = 24e6,
              baud: int = 115_200) -> dict[str, tuple[int, int]]:
    """``{module: (LUT4, block RAMs)}`` of the host link alone for ``config`` with
    ``board``'s link settings."""
    from ..hw.link import LinkConfig, UARTLink
    from .registry import get_board

    link = LinkConfig.for_baud(clock_hz, baud, **get_board(board).link_fields)
    stat = module_stat(UARTLink(config, link))
    return {name: (cells.get("SB_LUT4", 0), cells.get("SB_RAM40_4K", 0))
            for name, cells in stat.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shiftpool.boards.unit_luts",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--lanes", type=int, default=2)
    parser.add_argument("--taps", type=int, default=4)
    parser.add_argument("--engine", default="shiftadd")
    args = parser.parse_args(argv)
    rows = link_luts(demo_sized_config(args.lanes, args.taps, args.engine))
    print(" LUT4  EBR  module")
    for name, (luts, ebr) in sorted(rows.items()):
        print(f"{luts:5d} {ebr:4d}  {name}")
    print(f"{sum(v[0] for v in rows.values()):5d} {sum(v[1] for v in rows.values()):4d}  "
          f"link total")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
