"""Bitstreams and reports: yosys and nextpnr on a board's device top, and
programming the result onto the board.

:func:`build` writes into its output folder:

* ``report.json``: utilization (logic cells or LUTs, flip-flops, block RAM, SPRAM,
  DSPs: used and available), the same by unit (``units``: link, controller, engine,
  memories, other; from a second, unflattened synthesis, see
  :mod:`~shiftpool.boards.units`), Fmax achieved against the target clock, tool versions,
  the accelerator configuration and its hash, and (for a model) cycles and
  inferences per second. Utilization and Fmax come from nextpnr's JSON report
  (``--report``); the flip-flop count of iCE40 designs, which nextpnr does not
  report apart from the logic cells, from yosys' ``stat -json``.
* the bitstream (``top.bin``, ``top.bit`` or ``top.fs``), unless ``report_only``;
* ``build/``: the tools' inputs, outputs and logs.

A design that does not fit its device ends, as soon as nextpnr has packed it
(before the per-unit synthesis and placement), in a :class:`~shiftpool.boards.board.BoardError`
whose message names the resources it over-uses; one that misses the clock, after
place and route, in one that names the clock.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from ..hw.config import DEFAULT_LANES, DEFAULT_TAPS, AcceleratorConfig
from ..hw.link import LinkConfig
from ..hw.memories import DROP_INIT
from ..sw.host.driver import DEFAULT_BAUD
from .board import Board, BoardError
from .clocks import pll_for
from .registry import get_board
from .tools import find_executable, find_tool, run_tool, tool_version
from .units import units_from_stat, units_script

__all__ = ["REPORT_FORMAT", "RESOURCES", "DEFAULT_BAUD", "Design", "build", "program",
           "parse_nextpnr_report", "resolve_design", "synth_options"]

REPORT_FORMAT = "shiftpool-build-report"
#: Columns of the utilization table, with what each is called in nextpnr's report
#: per family (``None``: the family has no such resource).
RESOURCES = {
    "logic": {"ice40": "ICESTORM_LC", "ecp5": "TRELLIS_COMB", "gowin": "LUT4"},
    "ff": {"ice40": None, "ecp5": "TRELLIS_FF", "gowin": "DFF"},
    "bram": {"ice40": "ICESTORM_RAM", "ecp5": "DP16KD", "gowin": "BSRAM"},
    "spram": {"ice40": "ICESTORM_SPRAM", "ecp5": None, "gowin": None},
    "dsp": {"ice40": "ICESTORM_DSP", "ecp5": "MULT18X18D", "gowin": "MULT18X18"},
    "io": {"ice40": "SB_IO", "ecp5": "TRELLIS_IO", "gowin": "IOB"},
}
#: What a resource is, for messages.
RESOURCE_NAMES = {"logic": "logic cells", "ff": "flip-flops", "bram": "block RAM",
                  "spram": "SPRAM", "dsp": "DSP blocks", "io": "I/O pins"}
#: Per family: place-and-route tool, packer, synthesis options.
_FLOW = {
    "ice40": ("nextpnr-ice40", "icepack", "-dsp"),
    "ecp5": ("nextpnr-ecp5", "ecppack", ""),
    "gowin": ("nextpnr-himbaechel-gowin", "gowin_pack", ""),
}
#: Extra synthesis options of the iCE40 UltraPlus: map the single-port memories to
#: SPRAM (``hw/memories.py``) and let ABC optimize for the UltraPlus' (slower) timing
#: rather than the HX's, yosys' default.
ICE40UP_SYNTH_OPTS = "-spram -device u"


def synth_options(board: Board) -> tuple[str, str]:
    """``synth_<family>`` options for ``board`` and the yosys commands to run after
    reading the design: the iCE40 UltraPlus maps single-port memories to SPRAM, and
    an SPRAM cannot have initial contents."""
    opts = _FLOW[board.family][2]
    if board.family == "ice40" and board.device.startswith("iCE40UP"):
        return f"{opts} {ICE40UP_SYNTH_OPTS}", DROP_INIT
    return opts, ""


# -- the design -----------------------------------------------------------------------

@dataclasses.dataclass
class Design:
    """What gets built: a configuration, and the model it was fitted to (if any)."""

    config: AcceleratorConfig
    model: object = None            # QuantModel
    source: str | None = None       # model file or manifest, for the report

    @property
    def cycles(self) -> int | None:
        """Cycles per inference of the model (the cycle model's exact count)."""
        if self.model is None:
            return None
        from ..sw.compile.cycles import inference_cycles
        from ..sw.compile.image import compile_model

        return inference_cycles(compile_model(self.model, self.config))


def resolve_design(design, lanes: int = DEFAULT_LANES, taps: int = DEFAULT_TAPS) -> Design:
    """``design`` as a :class:`Design`: a :class:`~shiftpool.sw.model.file.QuantModel` or a
    model file (fitted with ``lanes`` x ``taps``), an
    :class:`~shiftpool.hw.config.AcceleratorConfig`, or a generated design's folder
    or ``manifest.json``."""
    from ..sw.compile.fit import fit_config
    from ..sw.compile.manifest import load_manifest
    from ..sw.model.file import QuantModel, read_model

    if isinstance(design, Design):
        return design
    if isinstance(design, AcceleratorConfig):
        return Design(design)
    if isinstance(design, QuantModel):
        return Design(fit_config(design, lanes=lanes, taps=taps), design)
    path = Path(design)
    if path.is_dir() or path.suffix == ".json":
        return Design(load_manifest(path), source=str(path))
    model = read_model(path)
    return Design(fit_config(model, lanes=lanes, taps=taps), model, str(path))


# -- nextpnr's report -------------------------------------------------------------------

def parse_nextpnr_report(report: dict, family: str) -> dict:
    """Utilization and Fmax from nextpnr's ``--report`` JSON.

    Returns ``{"resources": {column: {"used", "available", "bel"}}, "clocks": {net:
    {"achieved_mhz", "target_mhz"}}}``; a resource the family lacks or the report
    does not list is left out.
    """
    util = report.get("utilization", {})
    resources = {}
    for column, bels in RESOURCES.items():
        bel = bels[family]
        if bel is not None and bel in util:
            resources[column] = {"used": int(util[bel]["used"]),
                                 "available": int(util[bel]["available"]), "bel": bel}
    clocks = {net: {"achieved_mhz": float(v["achieved"]), "target_mhz": float(v["constraint"])}
              for net, v in report.get("fmax", {}).items()}
    return {"resources": resources, "clocks": clocks}


def _over_used(resources: dict) -> list[str]:
    return [f"{RESOURCE_NAMES[c]} ({r['bel']}) {r['used']} used, {r['available']} available"
            for c, r in resources.items() if r["used"] > r["available"]]


def _yosys_cells(stat_path: Path) -> dict:
    """Cell counts by type from yosys' ``stat -json`` output (the top module, which is
    flat after synthesis)."""
    text = stat_path.read_text()
    # yosys writes its log header before the JSON object when tee'd
    stat = json.loads(text[text.index("{"):])
    design = stat.get("design") or next(iter(stat["modules"].values()))
    return {k: int(v) for k, v in design.get("num_cells_by_type", {}).items()}


@functools.cache
def _versions(family: str) -> dict:
    pnr, pack, _ = _FLOW[family]
    return {tool: tool_version(tool) for tool in ("yosys", pnr, pack)}


def _unit_statistics(board: Board, where: Path) -> tuple[dict | None, str | None]:
    """Utilization by unit (:mod:`~shiftpool.boards.units`): the same synthesis without
    flattening, ``stat -json`` per module. Returns ``(units, None)``, or ``(None,
    why)`` when that synthesis fails: yosys 0.70's ABC9 can trip an internal assertion
    on some unflattened designs, and the flat build does not depend on it."""
    (where / "units.ys").write_text(units_script((where / "top.ys").read_text()))
    proc = run_tool("yosys", ["-q", "-l", "units.log", "units.ys"], where)
    if proc.returncode != 0:
        return None, f"yosys (-noflatten) failed: {_last_error(where / 'units.log')}"
    return units_from_stat(where / "units.json", board.family), None


# -- the build ------------------------------------------------------------------------------

def _last_error(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines()
             if ln.strip().startswith("ERROR")] if log.exists() else []
    return lines[-1] if lines else f"see {log}"


def _constraint_args(board: Board, family: str) -> list[str]:
    return {"ice40": ["--pcf", "top.pcf"], "ecp5": ["--lpf", "top.lpf"],
            "gowin": ["--vopt", "cst=top.cst"]}[family]


def _netlist(family: str) -> str:
    return "top.syn.json" if family == "gowin" else "top.json"


def _pnr_args(board: Board) -> list[str]:
    return [*board.nextpnr_args, "--json", _netlist(board.family),
            *_constraint_args(board, board.family)]


def _check_packed(board: Board, where: Path, device: str) -> None:
    """nextpnr's packing alone (seconds, no placement): a design whose packed cells
    over-use the device raises naming the resources, before the long steps."""
    pnr = _FLOW[board.family][0]
    run_tool(pnr, [*_pnr_args(board), "--pack-only", "--report", "pack-report.json",
                   "--quiet"], where, log=where / "pack.log")
    if (where / "pack-report.json").exists():
        packed = parse_nextpnr_report(json.loads((where / "pack-report.json").read_text()),
                                      board.family)
        over = _over_used(packed["resources"])
        if over:
            raise BoardError(f"the design does not fit the {device} of {board.name}: "
                             f"{'; '.join(over)}")


def _place_and_route(board: Board, where: Path, device: str) -> dict:
    """nextpnr with a JSON report; a design that does not fit raises naming the
    resources it over-uses."""
    family = board.family
    pnr = _FLOW[family][0]
    outputs = {"ice40": ["--asc", "top.asc"], "ecp5": ["--textcfg", "top.config"],
               "gowin": ["--write", "top.pnr.json"]}[family]
    proc = run_tool(pnr, [*_pnr_args(board), *outputs, "--report", "nextpnr-report.json",
                          "--timing-allow-fail", "--log", "nextpnr.log", "--quiet"], where)
    if proc.returncode == 0:
        return json.loads((where / "nextpnr-report.json").read_text())
    _check_packed(board, where, device)    # did it fail for room?
    raise BoardError(f"{pnr} failed on {board.name}: {_last_error(where / 'nextpnr.log')}")


def _pack(board: Board, where: Path) -> str:
    pnr, pack, _ = _FLOW[board.family]
    if board.family == "ice40":
        args = ["top.asc", "top.bin"]
    elif board.family == "ecp5":
        args = ["--compress", "--input", "top.config", "--bit", "top.bit"]
    else:   # gowin_pack wants the chip family nextpnr was given (--vopt family=...)
        family = next(a for a in board.nextpnr_args if a.startswith("family="))
        args = ["-d", family.split("=", 1)[1], "-o", "top.fs", "top.pnr.json"]
    proc = run_tool(pack, args, where, log=where / "pack.log")
    if proc.returncode != 0 or not (where / board.bitstream).exists():
        raise BoardError(f"{pack} failed on {board.name}: "
                         f"{(proc.stderr or proc.stdout).strip()[-200:]}; see {where}/pack.log")
    return board.bitstream


def build(design, board: str | Board, out_dir: Path, report_only: bool = False, *,
          lanes: int | None = None, taps: int | None = None, clock_mhz: float | None = None,
          baud: int = DEFAULT_BAUD, check_timing: bool = True,
          progress: Callable[[str], None] | None = None) -> dict:
    """Synthesize, place and route ``design`` for ``board``; write ``report.json`` and
    (unless ``report_only``) the bitstream into ``out_dir``.

    Parameters
    ----------
    design
        A model (object or file; fitted with ``lanes`` x ``taps``, by default the
        board's ``engine_size``), an ``AcceleratorConfig``, or a generated design
        (folder or manifest).
    board : str or Board
        A name from :data:`~shiftpool.boards.registry.BOARDS`.
    report_only : bool
        Stop after place and route: utilization and Fmax, no bitstream.
    clock_mhz : float, optional
        Clock to build for instead of the board's (through its PLL).
    baud : int
        UART line rate of the host link.
    check_timing : bool
        Raise when Fmax is below the clock (the report is written first).
    progress : callable, optional
        Called with a line naming each step as it starts.

    Returns the report (as written to ``report.json``).

    Raises
    ------
    BoardError
        A tool is missing or fails, the design does not fit, or misses the clock.
    """
    t0 = time.monotonic()
    say = progress or (lambda text: None)
    board = get_board(board)
    lanes = board.engine_size[0] if lanes is None else lanes
    taps = board.engine_size[1] if taps is None else taps
    design = resolve_design(design, lanes=lanes, taps=taps)
    config = design.config
    out_dir = Path(out_dir)
    where = out_dir / "build"
    if where.exists():
        if any(where.iterdir()) and not (where / "top.ys").exists():
            raise BoardError(f"{where} exists and is not a shiftpool build folder; pick "
                             f"another output folder")
        shutil.rmtree(where)     # a previous build's: its reports must not be read again
    where.mkdir(parents=True)

    from .top import BoardTop

    want_hz = board.clock_hz if clock_mhz is None else clock_mhz * 1e6
    pll = pll_for(board, want_hz)
    clock_hz = pll.output_hz if pll is not None else board.oscillator_hz
    try:
        link = LinkConfig.for_baud(clock_hz, baud, **board.link_fields)
    except ValueError as exc:
        raise BoardError(f"host link on {board.name}: {exc}") from None
    platform = board.make_platform()
    synth_opts, after_read = synth_options(board)
    plan = platform.prepare(
        BoardTop(board, config, link, clock_hz, pll), name="top", synth_opts=synth_opts,
        script_after_read=after_read, script_after_synth="tee -q -o stat.json stat -json")
    plan.extract(str(where))

    say(f"synthesis (yosys) of the {config.engine} engine, {config.lanes} lanes x "
        f"{config.taps} taps, at {clock_hz / 1e6:g} MHz")
    proc = run_tool("yosys", ["-q", "-l", "yosys.log", "top.ys"], where)
    if proc.returncode != 0:
        raise BoardError(f"yosys failed on {board.name}: {_last_error(where / 'yosys.log')}")
    device = board.device
    say(f"packing ({_FLOW[board.family][0]} --pack-only): does it fit the {device}?")
    _check_packed(board, where, device)
    say("per-unit statistics (yosys, -noflatten)")
    units, units_error = _unit_statistics(board, where)
    if units_error:
        say(f"no per-unit statistics: {units_error}")
    say(f"place and route ({_FLOW[board.family][0]}) for the {device}")
    raw = _place_and_route(board, where, device)
    parsed = parse_nextpnr_report(raw, board.family)
    resources = parsed["resources"]
    cells = _yosys_cells(where / "stat.json")
    if board.family == "ice40":
        # nextpnr counts logic cells (LUT + FF + carry each); the flip-flops are yosys'.
        ffs = sum(n for cell, n in cells.items() if cell.startswith("SB_DFF"))
        resources["ff"] = {"used": ffs, "available": resources["logic"]["available"],
                           "bel": "SB_DFF*"}
        resources["lut"] = {"used": cells.get("SB_LUT4", 0),
                            "available": resources["logic"]["available"], "bel": "SB_LUT4"}
    if not parsed["clocks"]:
        raise BoardError(f"nextpnr reported no clock for {board.name}; see "
                         f"{where}/nextpnr.log")
    net, clk = min(parsed["clocks"].items(), key=lambda kv: kv[1]["achieved_mhz"])
    target_mhz = clock_hz / 1e6
    fmax = clk["achieved_mhz"]
    cycles = design.cycles
    report = {
        "format": REPORT_FORMAT, "version": 1,
        "board": board.name, "title": board.title, "family": board.family, "device": device,
        "report_only": report_only,
        "config": config.as_dict(), "config_hash": config.hash,
        "engine": config.engine, "lanes": config.lanes, "taps": config.taps,
        "model": None if design.model is None else {
            "source": design.source, "scheme": design.model.scheme},
        "clock": {"net": net, "target_mhz": target_mhz, "fmax_mhz": fmax,
                  "met": fmax >= target_mhz,
                  "pll": None if pll is None else pll.as_dict()},
        "resources": resources,
        "units": units,
        "units_error": units_error,
        "link": {**link.as_dict(), "baud": baud},
        "tools": {name: {"command": find_tool(name), "version": v}
                  for name, v in _versions(board.family).items()},
        "cycles_per_inference": cycles,
        "inferences_per_s": {"at_fmax": fmax * 1e6 / cycles,
                             "at_clock": clock_hz / cycles} if cycles else None,
        "bitstream": None,
        "seconds": None,
    }
    (out_dir / "nextpnr-report.json").write_text(json.dumps(raw, indent=1) + "\n")

    def write():
        report["seconds"] = round(time.monotonic() - t0, 1)
        tmp = out_dir / "report.json.tmp"
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, out_dir / "report.json")

    if check_timing and not report["clock"]["met"]:
        write()
        raise BoardError(f"timing: clock {net!r} of {board.name} reaches {fmax:.2f} MHz, below "
                         f"its {target_mhz:g} MHz target; build for a lower clock "
                         f"(--clock-mhz) or a smaller engine (--lanes/--taps)")
    if not report_only:
        say(f"bitstream ({_FLOW[board.family][1]})")
        name = _pack(board, where)
        shutil.copyfile(where / name, out_dir / name)
        report["bitstream"] = name
    write()
    return report


# -- programming ------------------------------------------------------------------------

#: Words in a programmer's output that mean it found no board.
_NO_BOARD = ("can't find", "cannot find", "not found", "unable to open", "no device",
             "fail to open", "failed to open", "no such device", "usb_open", "ftdi_usb_open",
             "no dfu capable", "jtag init failed", "cable not found")


def program(board: str | Board, bitstream: Path, timeout_s: float = 300) -> str:
    """Program ``bitstream`` onto ``board`` (volatile: until power-off) with the first
    of its programmers that is installed (``$ICEPROG``, ``$OPENFPGALOADER``,
    ``$DFU_UTIL`` override them). Returns the tool's output.

    Raises
    ------
    BoardError
        The file is missing, no programmer is installed, or the programmer fails (a
        board that is not connected is named as such).
    """
    board = get_board(board)
    bitstream = Path(bitstream)
    if not bitstream.is_file():
        raise BoardError(f"bitstream {bitstream} does not exist; make it with "
                         f"'shiftpool build --board {board.name} MODEL'")
    for tool, *args in board.programmers:
        command = find_executable(os.environ.get(tool.upper().replace("-", "_")) or tool)
        if command is None:
            continue
        argv = [command, *(a.format(bitstream=str(bitstream)) for a in args)]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise BoardError(f"{tool} did not finish programming {board.name} within "
                             f"{timeout_s:g} s") from None
        output = (proc.stdout + proc.stderr).strip()
        if proc.returncode == 0:
            return output
        last = output.splitlines()[-1] if output else f"exit code {proc.returncode}"
        if any(word in output.lower() for word in _NO_BOARD):
            raise BoardError(f"{tool} found no {board.title}: is it plugged in, and may "
                             f"this user open its USB device? ({last})")
        raise BoardError(f"{tool} failed to program {board.name}: {last}")
    tools = [p[0] for p in board.programmers]
    hints = {"iceprog": "apt-get install fpga-icestorm",
             "openFPGALoader": "apt-get install openfpgaloader",
             "dfu-util": "apt-get install dfu-util"}
    raise BoardError(f"no programmer for {board.name}: install "
                     + " or ".join(f"{t} ({hints.get(t, t)})" for t in tools))

