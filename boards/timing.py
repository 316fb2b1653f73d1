"""How fast one unit alone can be clocked on the iCE40 UltraPlus: the unit placed and
routed without the rest of the device, so that its own critical path shows.

The unit (the accelerator, or an engine) sits in a harness whose every path to and
from the unit's ports is register to register: its inputs come from one shift
register fed by a pin, its outputs are captured into another, read out by a pin. So
the Fmax nextpnr reports, and the critical path it prints, are the unit's own, not
the host link's or the I/O's. The command line::

    python -m shiftpool.boards.timing [--part accelerator|engine] [--lanes 2]
                                      [--taps 2] [--engine shiftadd] [--clock-mhz 48]
                                      [-o timing-build]

prints the Fmax and the critical path's cells with their logic delays (what a
pipelining change should cut). The configuration is the digits demo's
(:func:`~shiftpool.boards.units.demo_sized_config`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from ..hw.config import DEFAULT_LANES
from .board import BoardError
from .tools import run_tool
from .units import demo_sized_config

__all__ = ["Harness", "main", "unit_timing"]

#: Logic delays (ns) below this are carry-chain steps: left out of the printed path.
SHOWN_DELAY_NS = 0.3


def Harness(dut):
    """The register-to-register harness around component ``dut`` (module docstring),
    with ports ``din``, ``load`` and ``dout``."""
    from amaranth.hdl import Cat, Elaboratable, Module, Mux, Signal, Value
    from amaranth.lib import wiring

    class _Harness(Elaboratable):
        def __init__(self):
            self.din, self.load, self.dout = Signal(), Signal(), Signal()

        def elaborate(self, platform):
            m = Module()
            m.submodules.dut = dut
            ins, outs = [], []
            for _, member, value in dut.signature.flatten(dut):
                (ins if member.flow == wiring.In else outs).append(Value.cast(value))
            shift_in = Signal(sum(len(v) for v in ins))
            m.d.sync += shift_in.eq(Cat(self.din, shift_in[:-1]))
            at = 0
            for value in ins:
                m.d.comb += value.eq(shift_in[at:at + len(value)])
                at += len(value)
            captured = Cat(*outs)
            shift_out = Signal(len(captured))
            m.d.sync += shift_out.eq(Mux(self.load, captured, shift_out >> 1))
            m.d.comb += self.dout.eq(shift_out[0])
            return m

    return _Harness()


def unit_timing(part: str, lanes: int, taps: int, engine: str, clock_mhz: float,
                out_dir: Path) -> dict:
    """Synthesize, place and route ``part`` alone (module docstring) in ``out_dir``;
    returns ``fmax_mhz`` and ``path``: the critical path's ``(kind, delay ns, cell)``
    steps (logic, clock-to-out, setup)."""
    from amaranth.back import rtlil

    from ..hw.accelerator import Accelerator
    from ..hw.engines.common import make_engine

    out_dir.mkdir(parents=True, exist_ok=True)
    config = demo_sized_config(lanes, taps, engine)
    unit = Accelerator(config) if part == "accelerator" else make_engine(config)
    top = Harness(unit)
    (out_dir / "top.il").write_text(rtlil.convert(top, ports=[top.din, top.load, top.dout],
                                                  name="top"))
    script = "read_rtlil top.il\nsynth_ice40 -device u -dsp -spram -top top\nwrite_json top.json\n"
    if run_tool("yosys", ["-q", "-p", script.replace("\n", "; ")], out_dir,
                out_dir / "yosys.log").returncode:
        raise BoardError(f"yosys failed; see {out_dir / 'yosys.log'}")
    if run_tool("nextpnr-ice40", ["--up5k", "--package", "sg48", "--json", "top.json",
                                  "--freq", str(clock_mhz), "--report", "report.json",
                                  "--timing-allow-fail", "--pcf-allow-unconstrained",
                                  "--quiet", "--log", "nextpnr.log"], out_dir).returncode:
        raise BoardError(f"nextpnr failed; see {out_dir / 'nextpnr.log'}")
    report = json.loads((out_dir / "report.json").read_text())
    fmax = min(c["achieved"] for name, c in report["fmax"].items() if "glb_clk" in name
               and not name.startswith("$PACKER"))
    # The register-to-register path of the clock (not the ones from or to a pin).
    (path,) = [p for p in report["critical_paths"]
               if p["from"].startswith("posedge") and p["to"].startswith("posedge")][:1] or [
        {"path": []}]
    steps = [(s["type"], s["delay"], s["to"].get("cell", "")) for s in path["path"]
             if s["type"] in ("clk-to-q", "logic", "setup")]
    return {"fmax_mhz": fmax, "path": steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shiftpool.boards.timing",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("accelerator", "engine"), default="accelerator")
    parser.add_argument("--lanes", type=int, default=DEFAULT_LANES)
    parser.add_argument("--taps", type=int, default=2)
    parser.add_argument("--engine", default="shiftadd")
    parser.add_argument("--clock-mhz", type=float, default=48.0)
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="build folder (default: a temporary one)")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="shiftpool-timing-") as tmp:
            result = unit_timing(args.part, args.lanes, args.taps, args.engine,
                                 args.clock_mhz, args.output or Path(tmp))
    except (BoardError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.part}, {args.engine} {args.lanes}x{args.taps}, alone on the iCE40UP5K: "
          f"{result['fmax_mhz']:.1f} MHz (target {args.clock_mhz:g})")
    for kind, delay, cell in result["path"]:
        if delay >= SHOWN_DELAY_NS:
            print(f"  {kind:8} {delay:5.2f} ns  {cell[:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
