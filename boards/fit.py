"""Engines that fill the board: the largest engine (lanes x taps) of a model's scheme
that fits a board at its clock.

:func:`fit_build` places and routes the candidates largest first (by lanes x taps,
then taps) and keeps the first that fits the device and meets the clock; a candidate
the model cannot be laid out for (``ConfigError``) is skipped without a build. Each
candidate's outcome is cached in ``OUT/fit/cache.json``, keyed by board, clock,
configuration hash and the gateware's digest, so a second ``--fit`` places and
routes nothing it has placed and routed before (with ``report_only`` the cached fit's
report is the answer; otherwise the fit is built again to make its bitstream).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from .board import BoardError
from .registry import get_board

__all__ = ["CANDIDATES", "candidate_sizes", "fit_build"]

#: The sizes ``--fit`` tries by default: lanes and taps in powers of two up to 16.
CANDIDATES = tuple((lanes, taps) for lanes in (1, 2, 4, 8, 16) for taps in (1, 2, 4, 8, 16))


#: How :func:`~shiftpool.boards.build.build` says a design misses the device or clock.
_NO_FIT = ("the design does not fit", "timing:")


def candidate_sizes(sizes=None) -> list[tuple[int, int]]:
    """``sizes`` (default :data:`CANDIDATES`) largest first: by lanes x taps, then
    taps (a wider lane costs no extra write-back)."""
    return sorted(set(sizes or CANDIDATES), key=lambda s: (s[0] * s[1], s[1]), reverse=True)


def _cache_key(board, clock_mhz, config) -> str:
    from ..sim.runner import gateware_digest

    return f"{board.name}:{clock_mhz or board.clock_hz / 1e6:g}MHz:{config.hash}:" \
           f"{gateware_digest()}"


def _load_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _save_cache(path: Path, cache: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=1) + "\n")
    os.replace(tmp, path)


def _chosen(out_dir: Path, report: dict, lanes: int, taps: int, tried: list) -> dict:
    report["fit"] = {"chosen": [lanes, taps], "tried": tried}
    tmp = out_dir / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out_dir / "report.json")
    return report


def fit_build(model, board, out_dir: Path, *, sizes=None, report_only: bool = False,
              clock_mhz: float | None = None, progress: Callable[[str], None] | None = None,
              **build_args) -> dict:
    """Build ``model`` (a QuantModel or model file) for ``board`` with the largest
    engine of ``sizes`` that fits and meets the clock; returns its report (written to
    ``out_dir/report.json``, with ``fit``: the sizes tried and why each was left).

    Raises
    ------
    BoardError
        No candidate fits (one line naming the largest candidate's reason).
    """
    from ..hw.config import ConfigError
    from ..sw.compile.fit import fit_config
    from ..sw.model.file import QuantModel, read_model
    from .build import build

    say = progress or (lambda text: None)
    board = get_board(board)
    if not isinstance(model, QuantModel):
        model = read_model(Path(model))
    out_dir = Path(out_dir)
    cache_path = out_dir / "fit" / "cache.json"
    cache = _load_cache(cache_path)
    tried = []
    order = candidate_sizes(sizes)
    for n, (lanes, taps) in enumerate(order, 1):
        size = f"{lanes}x{taps}"
        try:
            config = fit_config(model, lanes=lanes, taps=taps)
        except ConfigError as exc:
            tried.append({"lanes": lanes, "taps": taps, "fits": False, "why": str(exc),
                          "skipped": True})
            say(f"fit {n}/{len(order)}: {size} skipped: {exc}")
            continue
        key = _cache_key(board, clock_mhz, config)
        known = cache.get(key)
        if known is not None and not known["fits"]:
            tried.append({"lanes": lanes, "taps": taps, "fits": False, "why": known["why"],
                          "cached": True})
            say(f"fit {n}/{len(order)}: {size} does not fit (cached): {known['why']}")
            continue
        if known is not None and report_only and known.get("report"):
            say(f"fit {n}/{len(order)}: {size} fits (cached)")
            tried.append({"lanes": lanes, "taps": taps, "fits": True, "why": None,
                          "cached": True})
            return _chosen(out_dir, dict(known["report"]), lanes, taps, tried)
        say(f"fit {n}/{len(order)}: {size}, place and route"
            + (" (fitted before, cached)" if known else ""))
        try:
            report = build(model, board, out_dir, report_only=report_only, lanes=lanes,
                           taps=taps, clock_mhz=clock_mhz, progress=progress, **build_args)
        except BoardError as exc:
            if str(exc).startswith(_NO_FIT):     # a tool failure is not remembered
                cache[key] = {"fits": False, "why": str(exc)}
                _save_cache(cache_path, cache)
            tried.append({"lanes": lanes, "taps": taps, "fits": False, "why": str(exc)})
            say(f"fit {n}/{len(order)}: {size} does not fit: {exc}")
            continue
        cache[key] = {"fits": True, "why": None, "report": report}
        _save_cache(cache_path, cache)
        tried.append({"lanes": lanes, "taps": taps, "fits": True, "why": None})
        return _chosen(out_dir, report, lanes, taps, tried)
    if (out_dir / "report.json").exists():
        os.remove(out_dir / "report.json")      # a missed candidate's, not a result
    # The reason of the largest candidate that was built, else of the largest.
    built = [t for t in tried if not t.get("skipped")]
    first = (built or tried or [None])[0]
    why = "" if first is None else \
        f"; the largest{' built' if built else ''}, {first['lanes']}x{first['taps']}: " \
        f"{first['why']}"
    raise BoardError(f"no engine of {', '.join(f'{a}x{b}' for a, b in order)} fits "
                     f"{board.name}{why}")
