"""The board figures of the demo models, measured in one command:

    python -m shiftpool.boards.report [-o board-figures] [--boards icebreaker,ulx3s-85f]
                                      [--sizes 2x2,4x8] [--fit] [--model FILE ...]
                                      [--bits B]

For each board and engine size (by default the board's own ``engine_size``, the one
``shiftpool build`` uses) it places and routes (``report_only``) the device for the
digits CNN compressed by every registered scheme that has an engine and a form for a
CNN (:func:`demo_models`), or the ``--model`` files (one per registered scheme, one of
them int8), and tabulates utilization
(LUT4, logic cells, flip-flops, block RAM, SPRAM, DSPs), Fmax, cycles per inference
(the cycle model), inferences per second at Fmax and inferences per second per 1000
LUT4 (yosys' LUT4 count on iCE40, the logic count elsewhere), and each of them as a
ratio to int8 at the same size (:func:`add_ratios`); a line per board and scheme
then says where int8 wins. With ``--fit`` each scheme gets the largest engine of the
``--sizes`` candidates (default :data:`~shiftpool.boards.fit.CANDIDATES`) that fits
the board and meets its clock (:func:`~shiftpool.boards.fit.fit_build`: estimates
drop candidates, the chosen one is placed and routed; cached, so a second run is
quick), and the ratios are to int8's fitted engine on the same board. A design that
does not fit is listed with the resources it over-uses. ``--bits B`` gives a pool
model's figures at run-time precision ``B`` (its pool layers run ``B`` bit-planes:
the same hardware, another program; ``shiftpool run --bits``). Writes
``figures.md`` and ``figures.json`` (with each build's ``units``) into the output
folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..sw.model.file import ModelError
from .board import BoardError
from .build import build

__all__ = ["RATIO_KEYS", "add_ratios", "demo_models", "figures_table", "main", "measure"]


def demo_models(cache_dir: Path | None = None, log=print) -> dict:
    """Every registered scheme with an engine, compressed from the digits CNN with its
    defaults (as ``shiftpool compress`` makes them): scheme -> model. A scheme with no
    form for a CNN (RBNN) is left out, with a line to ``log`` saying why."""
    from ..sw.schemes.compress import compress
    from ..sw.schemes.registry import schemes
    from ..sw.train.datasets import load_digits_split
    from ..sw.train.digits import digits_float_model

    x_train, y_train, x_test, y_test = load_digits_split()
    float_model = digits_float_model(cache_dir=cache_dir, progress=False)
    models = {}
    for name, scheme in schemes().items():
        if not scheme.engine:
            continue
        try:
            models[name] = compress(float_model, name, x_train=x_train, y_train=y_train,
                                    x_test=x_test, y_test=y_test, progress=False)
        except ValueError as exc:
            log(f"{name}: not measured: {exc}")
    return models


def measure(models: dict, boards, sizes, out_dir: Path, log=print, fit: bool = False,
            bits: int | None = None) -> list[dict]:
    """One row per (board, size, scheme): the build report's figures, or why it
    does not fit. ``sizes``: ``(lanes, taps)`` pairs, or ``None`` for each board's
    ``engine_size``. ``models``: scheme -> model, int8 among them (the baseline).

    With ``fit``, one row per (board, scheme): the largest engine of ``sizes`` (or
    :data:`~shiftpool.boards.fit.CANDIDATES`) that fits the board and meets its clock
    (:func:`~shiftpool.boards.fit.fit_build`), and the ratios are to int8's fitted
    engine on the same board. ``bits``: the run-time precision of pool models (their
    cycles are the cycle model's at ``bits`` bit-planes)."""
    from .fit import fit_build
    from .registry import get_board

    rows = []
    for board in boards:
        plan = [None] if fit else (sizes or [get_board(board).engine_size])
        for size in plan:
            for scheme in models:
                lanes, taps = size or (None, None)
                name = "fit" if fit else f"{lanes}x{taps}"
                where = Path(out_dir) / f"{board}-{name}-{scheme}"
                t0 = time.monotonic()
                row = {"board": board, "lanes": lanes, "taps": taps, "scheme": scheme,
                       "fitted": fit}
                try:
                    if fit:
                        rep = fit_build(models[scheme], board, where, sizes=sizes,
                                        report_only=True,
                                        progress=lambda t, b=board, s=scheme:
                                        log(f"[shiftpool] {b} {s}: {t}"))
                        row.update(lanes=rep["lanes"], taps=rep["taps"])
                    else:
                        rep = build(models[scheme], board, where, report_only=True,
                                    lanes=lanes, taps=taps, check_timing=False)
                except BoardError as exc:
                    row["error"] = str(exc)
                else:
                    res = rep["resources"]
                    row.update(
                        device=rep["device"], engine=rep["engine"],
                        config_hash=rep["config_hash"],
                        logic=res["logic"]["used"], logic_available=res["logic"]["available"],
                        logic_bel=res["logic"]["bel"], ff=res["ff"]["used"],
                        lut=res.get("lut", res["logic"])["used"], units=rep.get("units"),
                        bram=res["bram"]["used"], bram_available=res["bram"]["available"],
                        dsp=res.get("dsp", {}).get("used", 0),
                        spram=res.get("spram", {}).get("used"),
                        fmax_mhz=rep["clock"]["fmax_mhz"], target_mhz=rep["clock"]["target_mhz"],
                        cycles=rep["cycles_per_inference"])
                    if bits is not None and _pooled(models[scheme]):
                        row.update(bits=bits, cycles=_cycles_at(models[scheme], rep, bits))
                    row["inf_per_s"] = row["fmax_mhz"] * 1e6 / row["cycles"]
                    row["inf_per_s_per_klut"] = row["inf_per_s"] / (row["lut"] / 1000)
                    row["tools"] = rep["tools"]
                row["seconds"] = round(time.monotonic() - t0, 1)
                label = "fit" if row["lanes"] is None else f"{row['lanes']}x{row['taps']}"
                log(f"[shiftpool] {board} {label} {scheme}: "
                    f"{row.get('error') or 'placed and routed'} ({row['seconds']} s)")
                rows.append(row)
    return add_ratios(rows, fit)


def _pooled(model) -> bool:
    return any(layer.is_pool for layer in model.layers)


def _cycles_at(model, report: dict, bits: int) -> int:
    """Cycles per inference of ``model`` on the built design of ``report`` with its
    pool layers at ``bits`` bit-planes."""
    from ..hw.config import AcceleratorConfig
    from ..sw.compile.cycles import inference_cycles
    from ..sw.compile.image import compile_model

    return inference_cycles(compile_model(model, AcceleratorConfig.from_dict(report["config"]),
                                          bits=bits))


#: The figures given as a ratio to int8's (``KEY_vs_int8``).
RATIO_KEYS = ("lut", "logic", "bram", "spram", "dsp", "fmax_mhz", "cycles", "inf_per_s",
              "inf_per_s_per_klut")


def add_ratios(rows: list[dict], fit: bool) -> list[dict]:
    """Each row's figures divided by int8's on the same board (at the same size, or
    with ``fit`` its best engine), as ``KEY_vs_int8``; ``None`` where int8's figure is
    0 or missing (no SPRAM on the board, no DSP used)."""
    for row in rows:
        base = next((r for r in rows if r["scheme"] == "int8" and r["board"] == row["board"]
                     and (fit or (r["lanes"], r["taps"]) == (row["lanes"], row["taps"]))),
                    None)
        if base is None or "error" in base or "error" in row:
            continue
        for key in RATIO_KEYS:
            mine, theirs = row.get(key), base.get(key)
            row[f"{key}_vs_int8"] = None if mine is None or not theirs else mine / theirs
    return rows


def figures_table(rows: list[dict]) -> str:
    """The rows as a markdown table, then a line per board saying where int8 wins."""
    ratios = ("LUT4", "EBR", "SPRAM", "DSP", "Fmax", "cycles", "inf/s", "inf/s per 1k")
    head = ("| board | scheme | lanes x taps | LUT4 | logic used / avail | FFs | BRAM | SPRAM | "
            "DSP | Fmax MHz (target) | cycles/inf | inf/s at Fmax | inf/s per 1k LUT4 | "
            + " | ".join(f"{r} vs int8" for r in ratios) + " |")
    columns = head.count("|") - 1
    lines = [head, "|" + "---|" * columns]
    for r in rows:
        size = "fit" if r["lanes"] is None else f"{r['lanes']}x{r['taps']}"
        if "error" in r:
            lines.append(f"| {r['board']} | {r['scheme']} | {size} | does not fit: "
                         f"{r['error'].split(': ', 1)[-1]} |" + " |" * (columns - 4))
            continue

        def ratio(key, row=r):
            v = row.get(f"{key}_vs_int8")
            return "-" if v is None else f"{v:.2f}"

        scheme = f"{r['scheme']} ({r['bits']}-bit acts)" if r.get("bits") else r["scheme"]
        lines.append(
            f"| {r['board']} | {scheme} | {size} | {r['lut']} | {r['logic']} / "
            f"{r['logic_available']} ({r['logic_bel']}) | {r['ff']} | {r['bram']} / "
            f"{r['bram_available']} | {'-' if r.get('spram') is None else r['spram']} | "
            f"{r['dsp']} | {r['fmax_mhz']:.1f} ({r['target_mhz']:g}) | {r['cycles']} | "
            f"{r['inf_per_s']:.0f} | {r['inf_per_s_per_klut']:.1f} | "
            + " | ".join(ratio(k) for k in ("lut", "bram", "spram", "dsp", "fmax_mhz",
                                            "cycles", "inf_per_s", "inf_per_s_per_klut"))
            + " |")
    lines.append("")
    for r in rows:
        if r["scheme"] == "int8" or r.get("inf_per_s_vs_int8") is None:
            continue
        wins = [what for key, what in (("inf_per_s", "inferences per second"),
                                       ("inf_per_s_per_klut", "inferences per second per "
                                        "1000 LUT4"))
                if r[f"{key}_vs_int8"] < 1]
        if wins:
            lines.append(f"- {r['board']}: int8 wins over {r['scheme']} in "
                         f"{' and '.join(wins)}.")
    return "\n".join(lines).rstrip()


def parse_sizes(text: str, flag: str = "--sizes") -> list[tuple[int, int]]:
    """``"2x2,4x8"`` -> ``[(2, 2), (4, 8)]``; ``flag`` names the option in errors."""
    sizes = []
    for item in text.split(","):
        parts = item.lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"{flag} {text!r}: {item!r} is not LANESxTAPS (e.g. 2x4); "
                             f"give LANESxTAPS,...")
        sizes.append((int(parts[0]), int(parts[1])))
    return sizes


def _sizes(text: str) -> list[tuple[int, int]] | None:
    """``"board"`` -> None (each board's size); ``"2x2,4x8"`` -> ``[(2, 2), (4, 8)]``."""
    if text == "board":
        return None
    return parse_sizes(text)


def _model_files(paths) -> dict:
    """scheme -> model of the files ``paths``; one of them int8, none twice."""
    from ..sw.model.file import read_model

    models = {}
    for path in paths:
        model = read_model(path)
        # the registered scheme (lightnn2 is stored as flightnn)
        scheme = model.meta.get("scheme", model.scheme)
        if scheme in models:
            raise ValueError(f"--model {path}: a second {scheme} model; give one "
                             f"model per scheme")
        models[scheme] = model
    if "int8" not in models:
        raise ValueError("--model: no int8 model among them; add one (shiftpool compress "
                         "--scheme int8), it is the baseline of the ratios")
    return models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shiftpool.boards.report",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("board-figures"))
    parser.add_argument("--boards", default="icebreaker,ulx3s-85f")
    parser.add_argument("--sizes", default=None,
                        help="LANESxTAPS,... (default: each board's engine size; with "
                        "--fit the candidates, default lanes and taps 1..16)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where the trained float model is cached")
    parser.add_argument("--fit", action="store_true",
                        help="per board and scheme the largest engine that fits (the "
                        "candidates: --sizes, default lanes and taps 1..16)")
    parser.add_argument("--model", type=Path, action="append", default=None,
                        metavar="FILE", help="model files to compare instead of the "
                        "digits demo's (repeat; one of them int8, the baseline)")
    parser.add_argument("--bits", type=int, default=None, metavar="B",
                        help="pool models at run-time precision B (activation bit-planes "
                        "of their pool layers; default all of them)")
    args = parser.parse_args(argv)
    from .registry import get_board

    boards = args.boards.split(",")
    try:
        for board in boards:
            get_board(board)
        sizes = None if args.sizes is None else _sizes(args.sizes)
        models = _model_files(args.model) if args.model else None
    except (BoardError, ValueError, ModelError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    if models is None:
        print("[shiftpool] digits demo models (float model trained once, then cached)",
              file=sys.stderr, flush=True)
        models = demo_models(args.cache_dir,
                             log=lambda s: print(s, file=sys.stderr, flush=True))
    if args.bits is not None and not 1 <= args.bits <= 16:
        print(f"error: --bits {args.bits}: a precision is 1 to 16 activation bits",
              file=sys.stderr)
        return 2
    try:
        rows = measure(models, boards, sizes, args.output, fit=args.fit, bits=args.bits,
                       log=lambda s: print(s, file=sys.stderr, flush=True))
    except ValueError as exc:      # --bits above a pool model's activation bits
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = figures_table(rows)
    args.output.mkdir(parents=True, exist_ok=True)
    what = ", ".join(models)
    base = "'s best engine on the board" if args.fit else " at the same size"
    text = (f"# Board figures ({what}; ratios to int8{base})\n\n"
            f"Command: `python -m shiftpool.boards.report {' '.join(argv or sys.argv[1:])}`"
            f" ({time.monotonic() - t0:.0f} s)\n\n{table}\n")
    (args.output / "figures.md").write_text(text)
    (args.output / "figures.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
