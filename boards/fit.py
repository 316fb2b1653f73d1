"""Engines that fill the board: the largest engine (lanes x taps) of a model's scheme
that fits a board at its clock.

:func:`fit_build` first drops, without a tool, the candidates the model cannot be laid
out for (``ConfigError``), those that make the same design as a larger one (the pool
engine's taps are always 8) and those whose memories do not fit
(:func:`~shiftpool.boards.fit_estimate.memory_verdict`). With more than two
candidates left, it then places and routes the smallest, the *reference*, and
goes through the others largest first (by lanes x taps, then taps): a candidate
whose logic or DSP estimate (:func:`~shiftpool.boards.fit_estimate.logic_verdict`:
the reference plus the difference of the engines synthesized alone) exceeds the
device is dropped, the others are built (a misfit ends after synthesis and
nextpnr's packing, :func:`~shiftpool.boards.build.build`), and the first that fits
the device and meets the clock is the answer (the reference if none does); two or
fewer are placed and routed largest first without a reference. Estimates only reject; the chosen
engine is always placed and routed. Each build's outcome is cached in
``OUT/fit/cache.json``, keyed by board, clock, configuration hash and the gateware's
digest, so a second ``--fit`` places and routes nothing it has placed and routed
before (with ``report_only`` the cached fit's report is the answer; otherwise the
fit is built again to make its bitstream).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from .board import BoardError
from .registry import get_board

__all__ = ["CANDIDATES", "Outcome", "Placements", "candidate_sizes", "fit_build"]

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


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One place and route (or its cached outcome)."""

    report: dict | None     # the build's report (also that of a missed clock), or None
    why: str | None         # why the design does not fit or meet the clock, or None
    built: Path | None      # its folder when placed and routed in this run
    cached: bool            # taken from the cache without a tool run


class Placements:
    """Place and route configurations of ``model`` on ``board`` in ``OUT/fit/LxT`` with
    :func:`~shiftpool.boards.build.build`, each outcome cached in
    ``OUT/fit/cache.json`` (the cache of the module docstring). A design that does not
    fit or misses the clock is remembered as such, a tool failure is not; with
    ``report_only`` a cached fit is not built again."""

    def __init__(self, model, board, out_dir: Path, *, clock_mhz: float | None = None,
                 report_only: bool = False, progress: Callable[[str], None] | None = None,
                 **build_args):
        self.model, self.board, self.out_dir = model, get_board(board), Path(out_dir)
        self.clock_mhz, self.report_only, self.build_args = clock_mhz, report_only, build_args
        self.progress = progress
        self.cache_path = self.out_dir / "fit" / "cache.json"
        self.cache = _load_cache(self.cache_path)

    def known(self, config) -> bool:
        """Whether ``config`` was placed and routed before (its outcome is cached)."""
        return _cache_key(self.board, self.clock_mhz, config) in self.cache

    def attempt(self, config, label: str) -> Outcome:
        """Place and route ``config`` (``config.lanes`` x ``config.taps``) or take its
        cached outcome; progress lines start with ``label``."""
        from .build import build

        say = self.progress or (lambda text: None)
        size = f"{config.lanes}x{config.taps}"
        where = self.out_dir / "fit" / size
        key = _cache_key(self.board, self.clock_mhz, config)
        known = self.cache.get(key)
        if known is not None and not known["fits"]:
            say(f"{label}: {size} does not fit (cached): {known['why']}")
            return Outcome(known.get("report"), known["why"], None, True)
        if known is not None and self.report_only and known.get("report"):
            say(f"{label}: {size} fits (cached)")
            return Outcome(dict(known["report"]), None, None, True)
        say(f"{label}: {size}, place and route" + (" (fitted before, cached)" if known else ""))
        try:
            report = build(self.model, self.board, where, report_only=self.report_only,
                           lanes=config.lanes, taps=config.taps, clock_mhz=self.clock_mhz,
                           progress=self.progress, **self.build_args)
        except BoardError as exc:
            why = str(exc)
            # the report a missed clock leaves (utilization is known)
            missed = json.loads((where / "report.json").read_text()) \
                if why.startswith("timing:") and (where / "report.json").exists() else None
            if why.startswith(_NO_FIT):     # a tool failure is not remembered
                self.cache[key] = {"fits": False, "why": why, "report": missed}
                _save_cache(self.cache_path, self.cache)
            say(f"{label}: {size} does not fit: {exc}")
            return Outcome(missed, why, None, False)
        self.cache[key] = {"fits": True, "why": None, "report": report}
        _save_cache(self.cache_path, self.cache)
        return Outcome(report, None, where, False)


def _chosen(out_dir: Path, report: dict, lanes: int, taps: int, tried: list,
            built: Path | None = None) -> dict:
    """Write the chosen candidate's report into ``out_dir``, with what a plain build
    leaves beside it (its build folder, nextpnr's report and the bitstream) when it was
    ``built`` (placed and routed) in this run."""
    if built is not None:
        if (out_dir / "build").exists():
            shutil.rmtree(out_dir / "build")
        shutil.copytree(built / "build", out_dir / "build")
        if (built / "nextpnr-report.json").exists():
            shutil.copy2(built / "nextpnr-report.json", out_dir / "nextpnr-report.json")
        if report.get("bitstream"):
            shutil.copy2(built / report["bitstream"], out_dir / report["bitstream"])
    report["fit"] = {"chosen": [lanes, taps], "tried": tried}
    tmp = out_dir / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out_dir / "report.json")
    return report


def _record(tried: list, lanes: int, taps: int, why: str | None, **flags) -> None:
    tried.append({"lanes": lanes, "taps": taps, "fits": why is None, "why": why, **flags})


def fit_build(model, board, out_dir: Path, *, sizes=None, report_only: bool = False,
              clock_mhz: float | None = None, progress: Callable[[str], None] | None = None,
              **build_args) -> dict:
    """Build ``model`` (a QuantModel or model file) for ``board`` with the largest
    engine of ``sizes`` that fits and meets the clock; returns its report (written to
    ``out_dir/report.json``, with ``fit``: the sizes tried and why each was left;
    ``estimated``: left on an estimate, not a build).

    Raises
    ------
    BoardError
        No candidate fits (one line naming the largest candidate's reason).
    """
    from ..hw.config import ConfigError
    from ..sw.compile.fit import fit_config
    from ..sw.model.file import QuantModel, read_model
    from .fit_estimate import engine_cost, logic_verdict, memory_verdict

    say = progress or (lambda text: None)
    board = get_board(board)
    if not isinstance(model, QuantModel):
        model = read_model(Path(model))
    out_dir = Path(out_dir)
    tried = []
    order = candidate_sizes(sizes)
    total = len(order)

    # Without a tool: layout, duplicates, memories.
    plans, seen = [], {}
    for n, (lanes, taps) in enumerate(order, 1):
        size = f"{lanes}x{taps}"
        try:
            config = fit_config(model, lanes=lanes, taps=taps)
        except ConfigError as exc:
            _record(tried, lanes, taps, str(exc), skipped=True)
            say(f"fit {n}/{total}: {size} skipped: {exc}")
            continue
        if (config.lanes, config.taps) != (lanes, taps):    # the pool engine's 8 taps
            lanes, taps = config.lanes, config.taps
            size = f"{size} ({lanes}x{taps})"
        if config.hash in seen:
            _record(tried, lanes, taps, f"the same design as {seen[config.hash]}",
                    skipped=True)
            say(f"fit {n}/{total}: {size} skipped: the same design as {seen[config.hash]}")
            continue
        seen[config.hash] = size
        why = memory_verdict(board, config)
        if why:
            _record(tried, lanes, taps, why, estimated=True)
            say(f"fit {n}/{total}: {size} does not fit: {why}")
            continue
        plans.append((n, lanes, taps, config))

    placer = Placements(model, board, out_dir, clock_mhz=clock_mhz, report_only=report_only,
                        progress=progress, **build_args)

    def attempt(n, lanes, taps, config) -> tuple[dict | None, str | None, Path | None]:
        outcome = placer.attempt(config, f"fit {n}/{total}")
        _record(tried, lanes, taps, outcome.why, **({"cached": True} if outcome.cached
                                                    else {}))
        return outcome.report, outcome.why, outcome.built

    engines = out_dir / "fit" / "engines.json"
    reference = ref_why = ref_built = None
    # With two candidates or fewer a reference build saves none: build them in order.
    estimate = len(plans) > 2
    if estimate:
        n, lanes, taps, config = plans[-1]
        say(f"fit: {lanes}x{taps}, the smallest left, is the reference of the estimates")
        reference, ref_why, ref_built = attempt(n, lanes, taps, config)
        ref_tried = tried.pop()         # listed in its place, last
        ref_engine = engine_cost(board, config, engines, say) \
            if reference is not None else None
    for n, lanes, taps, config in plans[:-1] if estimate else plans:
        size = f"{lanes}x{taps}"
        if not estimate:
            why = None
        elif reference is None:    # the smallest does not fit the device: none larger
            why = f"the smallest candidate left, {plans[-1][1]}x{plans[-1][2]}, does not " \
                  f"fit: {ref_why}"
        elif placer.known(config):
            why = None             # built before: its outcome is known
        else:
            why = logic_verdict(reference, ref_engine,
                                engine_cost(board, config, engines, say))
        if why:
            _record(tried, lanes, taps, why, estimated=True)
            say(f"fit {n}/{total}: {size} does not fit: {why}")
            continue
        report, why, built = attempt(n, lanes, taps, config)
        if why is None:
            return _chosen(out_dir, report, lanes, taps,
                           tried + ([ref_tried] if estimate else []), built)
    if estimate:
        tried.append(ref_tried)
        if ref_why is None:
            return _chosen(out_dir, dict(reference), plans[-1][1], plans[-1][2], tried,
                           ref_built)
    if (out_dir / "report.json").exists():
        os.remove(out_dir / "report.json")      # a missed candidate's, not a result
    # The reason of the largest candidate that was built, else of the smallest an
    # estimate dropped (the nearest to fitting), else of the largest.
    built = [t for t in tried if not t.get("skipped") and not t.get("estimated")]
    dropped = [t for t in tried if t.get("estimated")]
    if built:
        what, first = "the largest built", built[0]
    elif dropped:
        what, first = "the smallest", dropped[-1]
    else:
        what, first = "the largest", (tried or [None])[0]
    why = "" if first is None else f"; {what}, {first['lanes']}x{first['taps']}: " \
                                   f"{first['why']}"
    raise BoardError(f"no engine of {', '.join(f'{a}x{b}' for a, b in order)} fits "
                     f"{board.name}{why}")
