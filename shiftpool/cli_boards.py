"""``shiftpool build`` and ``shiftpool program``: bitstreams and reports for boards,
and programming them. :mod:`shiftpool.cli` adds these parsers to its own.

Like every shiftpool command, a failure is one line ``error: ...`` on stderr and a
non-zero exit code (2).
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["add_build_parser", "add_program_parser", "cmd_build", "cmd_program",
           "format_report"]


def _step(text: str) -> None:
    print(f"[shiftpool] {text}", file=sys.stderr, flush=True)


def _error(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr, flush=True)
    return 2


def format_report(report: dict) -> str:
    """The table ``shiftpool build`` prints for a ``report.json``."""
    clock = report["clock"]
    lines = [
        f"{report['title']}: {report['device']} ({report['family']}), "
        f"{report['engine']} engine {report['lanes']} lanes x {report['taps']} taps, "
        f"config hash {report['config_hash']}",
        f"{'resource':<12} {'used':>7} {'available':>10} {'share':>7}  (nextpnr name)",
    ]
    for column, res in report["resources"].items():
        share = res["used"] / res["available"] if res["available"] else 0.0
        lines.append(f"{column:<12} {res['used']:>7} {res['available']:>10} "
                     f"{share:>6.1%}  ({res['bel']})")
    units = report.get("units")
    if units:
        columns = list(next(iter(units.values())))
        lines.append(f"{'by unit':<12} " + " ".join(f"{c:>7}" for c in columns)
                     + "  (yosys, unflattened)")
        for unit, counts in units.items():
            lines.append(f"  {unit:<10} " + " ".join(f"{counts[c]:>7}" for c in columns))
    elif report.get("units_error"):
        lines.append(f"by unit      not available: {report['units_error']}")
    verdict = "met" if clock["met"] else "MISSED"
    pll = " via PLL" if clock["pll"] else ""
    lines.append(f"clock        {clock['fmax_mhz']:.2f} MHz achieved, target "
                 f"{clock['target_mhz']:g} MHz{pll}: {verdict}")
    if report.get("fit"):
        tried = ", ".join(f"{t['lanes']}x{t['taps']} {'fits' if t['fits'] else 'no'}"
                          for t in report["fit"]["tried"])
        lines.append(f"fit          largest engine that fits: {report['lanes']}x"
                     f"{report['taps']} (tried {tried})")
    if report.get("cycles_per_inference"):
        ips = report["inferences_per_s"]
        lines.append(f"inference    {report['cycles_per_inference']} cycles: "
                     f"{ips['at_clock']:.0f}/s at the clock, {ips['at_fmax']:.0f}/s at Fmax")
    tools = ", ".join(f"{t['version']}" for t in report["tools"].values())
    lines.append(f"tools        {tools}")
    return "\n".join(lines)


def cmd_build(args) -> int:
    """``shiftpool build``: bitstream (or, with ``--report-only``, just the report)."""
    from .boards.board import BoardError
    from .boards.build import build
    from .boards.fit import fit_build
    from .boards.report import parse_sizes
    from .hw.config import ConfigError
    from .sw.model.file import ModelError

    out = args.output or Path(f"build-{args.board}")
    if args.fit and (args.lanes is not None or args.taps is not None):
        return _error(ValueError("--fit picks lanes and taps itself; drop --lanes/--taps "
                                 "(or give the candidates with --fit-sizes)"))
    try:
        sizes = parse_sizes(args.fit_sizes, "--fit-sizes") if args.fit_sizes else None
    except ValueError as exc:
        return _error(exc)
    _step(f"building {args.model} for {args.board} "
          f"({'report only' if args.report_only else 'bitstream'}) in {out}/"
          + (": the largest engine that fits" if args.fit else ""))
    try:
        if args.fit:
            report = fit_build(args.model, args.board, out, sizes=sizes,
                               report_only=args.report_only, clock_mhz=args.clock_mhz,
                               baud=args.baud, progress=_step)
        else:
            report = build(args.model, args.board, out, report_only=args.report_only,
                           lanes=args.lanes, taps=args.taps, clock_mhz=args.clock_mhz,
                           baud=args.baud, progress=_step)
    except (BoardError, ConfigError, ModelError, FileNotFoundError) as exc:
        return _error(exc)
    print(format_report(report))
    made = f"{out}/{report['bitstream']} and " if report["bitstream"] else ""
    print(f"wrote {made}{out}/report.json")
    return 0


def cmd_program(args) -> int:
    """``shiftpool program``: load a bitstream into a board."""
    from .boards.board import BoardError
    from .boards.build import program

    try:
        program(args.board, args.bitstream)
    except BoardError as exc:
        return _error(exc)
    print(f"programmed {args.board} with {args.bitstream}")
    return 0


def _board_arg(p, required: bool) -> None:
    from .boards.registry import BOARDS

    p.add_argument("--board", choices=sorted(BOARDS), required=required,
                   default=None if required else "icebreaker",
                   help="target board" + ("" if required else " (default icebreaker)"))


def add_build_parser(sub) -> None:
    """Add ``build`` to the sub-command parsers ``sub``."""
    from .sw.host.driver import DEFAULT_BAUD

    p = sub.add_parser("build", help="model file -> bitstream + report.json for a board "
                       "(yosys + nextpnr)")
    p.add_argument("model", type=Path, help="model file (.npz), or a generated design "
                   "(folder or manifest.json)")
    _board_arg(p, required=False)
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output folder (default build-BOARD)")
    p.add_argument("--report-only", action="store_true",
                   help="synthesis and place-and-route only: utilization and Fmax, no "
                   "bitstream")
    p.add_argument("--lanes", type=int, default=None, help="output channels in parallel "
                   "(default: the board's, e.g. 2 on the iCEBreaker)")
    p.add_argument("--taps", type=int, default=None, help="inputs per lane per cycle "
                   "(default: the board's)")
    p.add_argument("--clock-mhz", type=float, default=None,
                   help="clock to build for (default: the board's)")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                   help=f"UART line rate of the host link (default {DEFAULT_BAUD})")
    p.add_argument("--fit", action="store_true",
                   help="build the largest engine (lanes x taps) that fits the board at "
                   "its clock: candidates placed and routed largest first, results "
                   "cached in OUTPUT/fit/")
    p.add_argument("--fit-sizes", default=None, metavar="LxT,...",
                   help="the candidates of --fit (default: lanes and taps 1, 2, 4, 8, 16)")
    p.set_defaults(func=cmd_build)


def add_program_parser(sub) -> None:
    """Add ``program`` to the sub-command parsers ``sub``."""
    p = sub.add_parser("program", help="load a bitstream into a board (openFPGALoader "
                       "or iceprog)")
    p.add_argument("bitstream", type=Path, help="bitstream from 'shiftpool build'")
    _board_arg(p, required=True)
    p.set_defaults(func=cmd_program)
