"""``shiftpool explore``: every scheme and its main knobs, on every engine size whose
memories fit each board; the Pareto front of accuracy, speed and weight bits, with
each point's logic, DSPs and Fmax.

For each variant (a scheme with its knobs: FLightNN's k=1 target, pool sizes and
run-time activation bits, RBNN rounds, MLG ranks, and int8 beside them: each registered
scheme's ``sweep`` and ``run_bits``, ``sw/schemes/registry.py``) the model is
compressed once (fine-tuned on the user's data) and evaluated by the golden model on
the test split. For each board and each engine size (lanes x taps) the configuration
is fitted, checked against the board's memories and laid out by the compiler. What a
point reports, and where each figure comes from:

* **golden accuracy**, **weight bits per weight**: measured (the golden model on the
  whole test split; the packed weights);
* **cycles** per inference: the compiler's cycle model (exact, checked against the
  RTL's counter by the simulation tests);
* **block RAM and SPRAM**: the memory estimate
  (:func:`shiftpool.boards.memory_fit.board_memory_fit`, equal to yosys' block count);
  a size whose memories do not fit is left out;
* **LUT4, logic cells and DSPs**: per board and engine type (shift-add, int8, pool),
  one *reference* is placed and routed for real: the first variant of the sweep with
  that engine, at its smallest size whose memories fit (by lanes x taps, then taps)
  and whose engine synthesizes alone.
  Its report gives the non-engine logic (link, controller, memories' glue) as the
  device's count minus its engine's, the engine synthesized alone
  (:func:`shiftpool.boards.fit_estimate.engine_cost`, yosys only). A point's figure is
  the reference device's, minus the reference engine's, plus this point's engine's:
  ``logic == "placed"`` for the reference design itself (the figures are nextpnr's and
  yosys' counts of that build), ``"estimate"`` for every other point. LUT4 is yosys'
  ``SB_LUT4`` count on iCE40 and nextpnr's logic count elsewhere, as ``build``
  reports it; DSPs are what the engine's synthesis maps (the int8 engine: one per
  multiplier on iCE40 and ECP5). The estimate keeps the reference's controller, link
  and memory glue: it does not see them change with lanes and taps (activation
  gathering, write-back) or between variants. Placed and routed against the digits
  sweep's estimates (``--epochs 2``, 1 x 1 references): int8 2 x 4 on the iCEBreaker
  3196 LUT4 / 4519 logic cells estimated, 3523 / 4981 placed (9% low); FLightNN 2 x 2
  3515 / 4852 against 3575 / 5008 (3% low); FLightNN 2 x 4 estimated 5283 logic
  cells, too many, and nextpnr's packing counts 5588; on the ULX3S FLightNN 8 x 2
  7517 against 7118 (6% high);
* **fits**: a point whose estimated logic cells or DSPs exceed the device
  (:func:`shiftpool.boards.fit_estimate.logic_verdict`, the check ``build --fit``
  drops candidates with) is kept with ``fits = False`` and the reason, and is never
  on the Pareto front. A reference that does not fit the device marks every point of
  its engine on that board as not fitting. A point whose engine does not synthesize
  alone (a yosys failure) has ``logic = "unknown"``, the reason, and no place on the
  front; the reference is the first variant's smallest size whose engine does
  synthesize;
* **Fmax**: the reference's, from nextpnr, for every point of its engine on that
  board; measured for the reference, an estimate for the others, and an optimistic
  one: larger engines are slower (the same builds: FLightNN 2 x 2 on the iCEBreaker
  26.3 MHz against the 1 x 1 reference's 30.6, 8 x 2 on the ULX3S 56.8 against 71.8;
  int8 2 x 4 31.5 against 31.0). Both boards' build clocks (24 and 40 MHz) are below
  all of these, so inferences per second did not depend on it there;
* **inferences per second**: ``min(build clock, Fmax) / cycles``: the design runs at
  the clock it is built for (the board's, through its PLL, or ``clock_mhz``) when it
  meets it, and at best at Fmax when it does not. Without place and route
  (``place_dir=None``) they are at the build clock and the logic columns are empty.

Each reference's place and route goes through ``build --fit``'s machinery
(:class:`shiftpool.boards.fit.Placements`), cached in
``PLACE_DIR/BOARD-ENGINE/fit/cache.json`` by board, clock, configuration hash and the
gateware's digest, and the engines' syntheses in ``.../fit/engines.json``: a second
sweep with the same ``place_dir`` places and routes nothing again.

The Pareto front of a board keeps the fitting points no other point beats on all three
of golden accuracy (higher), inferences per second (higher) and weight bits per
weight (lower). A variant no engine size of a board runs (no memories fit, or the
scheme has no form for the model) appears with its accuracy and bits per weight and
no speed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from .bench import weight_bits
from .boards.board import BoardError
from .boards.memory_fit import board_memory_fit
from .boards.registry import get_board
from .hw.config import POOL_GROUP, ConfigError
from .sw.compile.cycles import inference_cycles
from .sw.compile.fit import fit_config
from .sw.compile.image import compile_model
from .sw.schemes.compress import compress, evaluate
from .sw.schemes.registry import get_scheme, schemes

__all__ = ["DEFAULT_SIZES", "Point", "Variant", "explore", "pareto", "summary", "sweep",
           "variants", "write_results"]

#: Engine sizes tried on every board (lanes x taps; the pool engine has 8 taps).
DEFAULT_SIZES = tuple((lanes, taps) for lanes in (1, 2, 4, 8) for taps in (1, 2, 4, 8))
#: How :func:`~shiftpool.boards.build.build` says a design misses the device.
_NO_FIT = "the design does not fit"


@dataclasses.dataclass
class Point:
    """One variant on one engine of one board (``lanes = 0``: no engine runs it)."""

    board: str
    variant: str                # e.g. "flightnn k1=0.9", "pool S=16 4b"
    scheme: str
    accuracy: float             # golden model, whole test split
    bits_per_weight: float
    lanes: int = 0
    taps: int = 0
    cycles: int = 0             # cycle model
    inferences_per_s: float = 0.0   # min(clock, Fmax) / cycles
    block_ram: int = 0          # blocks of the device's block RAM (EBR, DP16KD, BSRAM)
    spram: int = 0              # iCE40 UltraPlus SPRAMs
    memory: str = ""            # the board's memory estimate, one line
    clock_mhz: float = 0.0      # the build clock
    lut4: int | None = None     # iCE40: yosys' SB_LUT4; elsewhere nextpnr's logic count
    logic_cells: int | None = None  # nextpnr's logic cells (ICESTORM_LC, TRELLIS_COMB)
    dsp: int | None = None
    fmax_mhz: float | None = None   # the reference's
    logic: str = ""             # "placed", "estimate", "unknown", "" (no place and route)
    fits: bool = True           # False: the logic or DSP estimate exceeds the device
    why: str = ""               # why it does not fit, or why its logic is unknown

    @property
    def runs(self) -> bool:
        return self.cycles > 0


@dataclasses.dataclass(frozen=True)
class Variant:
    """One compressed model of a sweep, at one run-time precision (``bits``: a pool
    model's activation bits, else ``None``), with its golden accuracy."""

    name: str
    scheme: str
    model: object               # QuantModel
    accuracy: float
    bits: int | None = None


def variants() -> list[tuple[str, str, dict]]:
    """``(label, scheme, options)`` of the knobs explored: every registered scheme's
    :attr:`~shiftpool.sw.schemes.registry.Scheme.sweep` (a scheme with no form for
    the float model, such as RBNN for a CNN, is skipped when it is compressed)."""
    return [(label, scheme.name, dict(options)) for scheme in schemes().values()
            for label, options in scheme.variants()]


def _compressed(float_model, data, label, scheme, options, epochs, seed, step):
    x_train, y_train, x_test, y_test = data
    step(f"explore: compress {label}")
    try:
        return compress(float_model, scheme, x_train=x_train, y_train=y_train, x_test=x_test,
                        y_test=y_test, seed=seed, progress=False, epochs=epochs, **options)
    except ValueError as exc:      # a scheme this model has no form for (rbnn on a CNN)
        step(f"explore: {label} skipped: {exc}")
        return None


def explore(float_model, data, boards, sizes=DEFAULT_SIZES, epochs: int = 10,
            seed: int = 0, step: Callable[[str], None] = print,
            place_dir: Path | None = None, clock_mhz: float | None = None) -> list[Point]:
    """Every variant on every size of every board (module docstring); with
    ``place_dir`` the logic, DSPs and Fmax of each point (one place and route per
    board and engine type, cached there).

    Raises
    ------
    BoardError
        An unknown board (before any work), or a reference's place and route fails
        for another reason than the design not fitting.
    """
    for board in boards:
        get_board(board)
    x_test, y_test = data[2], data[3]
    found = []
    for label, scheme, options in variants():
        qm = _compressed(float_model, data, label, scheme, options, epochs, seed, step)
        if qm is None:
            continue
        for bits in get_scheme(scheme).run_bits or (None,):
            name = label if bits is None else f"{label} {bits}b"
            accuracy = (float(qm.meta["accuracy"]) if bits is None
                        else evaluate(qm, x_test, y_test, bits=bits))
            found.append(Variant(name, scheme, qm, accuracy, bits))
    return sweep(found, boards, sizes, step=step, place_dir=place_dir, clock_mhz=clock_mhz)


def sweep(found: list[Variant], boards, sizes=DEFAULT_SIZES, *,
          step: Callable[[str], None] = print, place_dir: Path | None = None,
          clock_mhz: float | None = None) -> list[Point]:
    """The points of compressed ``found`` on every size of every board: memories and
    cycles, then (with ``place_dir``) logic and Fmax (module docstring). Points come
    in the order of ``found``, then boards, then sizes."""
    boards = [get_board(board).name for board in boards]
    points, designs = [], []
    for variant in found:
        for board in boards:
            for point, config in _on_board(variant, board, sizes, clock_mhz):
                points.append(point)
                if config is not None:
                    designs.append((point, variant.model, config))
    if place_dir is not None:
        groups: dict[tuple[str, str], list] = {}
        for design in designs:
            groups.setdefault((design[0].board, design[2].engine), []).append(design)
        for (board, engine), group in groups.items():
            _add_logic(board, engine, group, Path(place_dir), clock_mhz, step)
    return points


def _on_board(variant: Variant, board: str, sizes, clock_mhz) -> list[tuple[Point, object]]:
    """``(point, config)`` per size whose memories fit, or one point without an
    engine (``config`` None)."""
    qm = variant.model
    clock = clock_mhz * 1e6 if clock_mhz else get_board(board).clock_hz
    base = dict(board=board, variant=variant.name, scheme=variant.scheme,
                accuracy=variant.accuracy)
    try:
        probe = fit_config(qm, lanes=1, taps=POOL_GROUP if variant.scheme == "pool" else 1)
    except ConfigError as exc:
        # No accelerator for this scheme (yet): accuracy and bits per weight only.
        return [(Point(**base, bits_per_weight=_bpw(qm, None), memory=str(exc)), None)]
    found = []
    for lanes, taps in sorted(set((lanes, POOL_GROUP if probe.engine == "pool" else taps)
                                  for lanes, taps in sizes)):
        try:
            config = fit_config(qm, lanes=lanes, taps=taps)
            cycles = inference_cycles(compile_model(qm, config, bits=variant.bits))
        except ConfigError:
            continue
        fit = board_memory_fit(board, config)
        if fit.fits:
            found.append((Point(**base, bits_per_weight=_bpw(qm, config), lanes=lanes,
                                taps=taps, cycles=cycles, inferences_per_s=clock / cycles,
                                block_ram=fit.bram_used, spram=fit.spram_used,
                                memory=fit.message, clock_mhz=clock / 1e6), config))
    if not found:
        config = fit_config(qm, lanes=1, taps=probe.taps)
        found.append((Point(**base, bits_per_weight=_bpw(qm, config),
                            memory=board_memory_fit(board, config).message), None))
    return found


def _add_logic(board: str, engine: str, group: list, place_dir: Path,
               clock_mhz: float | None, step: Callable[[str], None]) -> None:
    """Logic, DSPs, Fmax and inferences per second of ``group`` (``(point, model,
    config)`` of one engine type on ``board``, in sweep order) from one reference
    place and route (module docstring). The reference is the first variant's smallest
    size whose engine synthesizes alone; a point whose engine does not gets
    ``logic = "unknown"`` and the reason."""
    from .boards.fit import Placements
    from .boards.fit_estimate import engine_cost, logic_verdict

    where = place_dir / f"{board}-{engine}"
    engines = where / "fit" / "engines.json"
    label = f"explore: {board} {engine} reference"
    costs = {}

    def cost(config):
        """The engine's cost, or the reason it has none (cached per config)."""
        if config.hash not in costs:
            try:
                costs[config.hash] = engine_cost(get_board(board), config, engines, step)
            except BoardError as exc:
                costs[config.hash] = f"no logic estimate: the {engine} engine " \
                                     f"{config.lanes}x{config.taps} alone does not " \
                                     f"synthesize ({exc})"
        return costs[config.hash]

    first = group[0][1]
    mine = sorted((d for d in group if d[1] is first),
                  key=lambda d: (d[2].lanes * d[2].taps, d[2].taps))
    usable = [d for d in mine if not isinstance(cost(d[2]), str)]
    if not usable:                  # no reference: the smallest's reason for all
        for point, _, _ in group:
            point.logic, point.why = "unknown", cost(mine[0][2])
        return
    ref_point, ref_model, ref_config = usable[0]
    ref_engine = cost(ref_config)
    size = f"{ref_config.lanes}x{ref_config.taps}"
    placer = Placements(ref_model, board, where, clock_mhz=clock_mhz, report_only=True,
                        progress=step)
    role = f"{label}: {ref_point.variant} {size} sets the logic and Fmax of every " \
           f"{engine} point on {board}; "
    step(role + ("placed and routed before, its cached result is used"
                 if placer.known(ref_config) else "place and route (takes minutes)"))
    outcome = placer.attempt(ref_config, label)
    reference = outcome.report
    if reference is None:
        if not (outcome.why or "").startswith(_NO_FIT):
            raise BoardError(f"explore: place and route of {ref_point.variant} {size} on "
                             f"{board} failed: {outcome.why}")
        why = (f"the smallest {engine} design, {ref_point.variant} {size}, placed and "
               f"routed, does not fit: {outcome.why}")
        for point, _, _ in group:
            point.fits, point.why = False, why
        return
    res = reference["resources"]
    lut, cells = res.get("lut", res["logic"])["used"], res["logic"]["used"]
    dsp = res.get("dsp", {}).get("used", 0)
    fmax = reference["clock"]["fmax_mhz"]
    clock = reference["clock"]["target_mhz"]
    for point, model, config in group:
        point.fmax_mhz, point.clock_mhz = fmax, clock
        point.inferences_per_s = min(clock, fmax) * 1e6 / point.cycles
        own = cost(config)
        if isinstance(own, str):
            point.logic, point.why = "unknown", own
            continue
        point.lut4 = round(lut - ref_engine.logic + own.logic)
        point.logic_cells = round(cells - ref_engine.logic + own.logic)
        point.dsp = round(dsp - ref_engine.dsp + own.dsp)
        placed = model is ref_model and config.hash == ref_config.hash
        point.logic = "placed" if placed else "estimate"
        why = None if placed else logic_verdict(reference, ref_engine, own)
        if why:
            point.fits, point.why = False, why


def _bpw(qm, config) -> float:
    if config is not None:
        weights, bits = weight_bits(qm, config.code_width)
        return bits / weights
    if "stored_bits_per_weight" in qm.meta:              # rbnn: N / K
        return float(qm.meta["stored_bits_per_weight"])
    stored = qm.meta.get("stored_weight_bits")            # mlg: bases and coefficients
    weights = sum(len(layer.bias) * layer.fan_in for layer in qm.layers if layer.is_mac)
    return float(stored) / weights if stored else float("nan")


def pareto(points: list[Point]) -> list[Point]:
    """The fitting points (logic not unknown) no other of the same board beats on
    accuracy (higher), inferences per second (higher) and bits per weight (lower) at
    once."""
    live = [p for p in points if p.runs and p.fits and p.logic != "unknown"]
    front = []
    for p in live:
        better = [q for q in live if q.board == p.board and q is not p
                  and q.accuracy >= p.accuracy and q.inferences_per_s >= p.inferences_per_s
                  and q.bits_per_weight <= p.bits_per_weight
                  and (q.accuracy, q.inferences_per_s, -q.bits_per_weight)
                  != (p.accuracy, p.inferences_per_s, -p.bits_per_weight)]
        if not better:
            front.append(p)
    return sorted(front, key=lambda p: (p.board, -p.inferences_per_s))


def _dash(value, form: str = "{}") -> str:
    return "-" if value is None else form.format(value)


def _table(points: list[Point]) -> list[str]:
    head = ("| board | variant | engine | golden acc | b/w | LUT4 | DSP | block RAM | SPRAM | "
            "Fmax MHz | cycles | inf/s | logic | memory |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for p in points:
        if p.runs:
            figures = (f"{p.lanes}x{p.taps} | {p.accuracy:.4f} | {p.bits_per_weight:.2f} | "
                       f"{_dash(p.lut4)} | {_dash(p.dsp)} | {p.block_ram} | {p.spram} | "
                       f"{_dash(p.fmax_mhz, '{:.1f}')} | {p.cycles} | "
                       f"{p.inferences_per_s:.0f} | {p.logic or '-'}")
        else:
            figures = (f"- | {p.accuracy:.4f} | {p.bits_per_weight:.2f} | - | - | - | - | - "
                       f"| - | - | -")
        lines.append(f"| {p.board} | {p.variant} | {figures} | {p.memory} |")
    return lines


def _legend(points: list[Point]) -> str:
    placed = any(p.logic for p in points)
    text = ("Golden accuracy and bits per weight are measured; cycles are the cycle "
            "model's; block RAM and SPRAM are the memory estimate (equal to yosys' block "
            "count). ")
    if placed:
        text += ("LUT4 (yosys' count on iCE40, nextpnr's logic count elsewhere), DSPs and "
                 "Fmax: `logic` says `placed` for the one design per board and engine type "
                 "that was placed and routed (measured), `estimate` for the others (that "
                 "design's logic minus its engine plus this engine synthesized alone; its "
                 "Fmax). Inferences per second are at min(build clock, Fmax).")
    else:
        text += ("Nothing was placed and routed: no logic or Fmax, inferences per second at "
                 "the board's build clock.")
    return text


def write_results(points: list[Point], out_dir: Path, command: str) -> Path:
    """``pareto.md`` (the front per board, the points too large for their device, then
    what runs on no engine), ``results.json`` (every point) and one plot per board
    (``pareto-BOARD.png``: accuracy against inferences per second, bits per weight and,
    when placed and routed, LUT4). Returns the table's path."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    front = pareto(points)
    idle = sorted({(p.variant, p.accuracy, p.bits_per_weight, p.memory)
                   for p in points if not p.runs})
    misfits = [p for p in points if p.runs and not p.fits]
    unknown = [p for p in points if p.logic == "unknown"]
    text = ["# shiftpool explore", "", f"`{command}`", "",
            "Pareto front per board (golden accuracy, inferences per second, bits per "
            "weight). " + _legend(points), ""]
    text += _table(front)
    if misfits:
        text += ["", "Too large for the device (memories fit, logic or DSPs do not):", ""]
        text += [f"- {p.board} {p.variant} {p.lanes}x{p.taps}: {p.why}" for p in misfits]
    if unknown:
        text += ["", "Memories fit, logic unknown (not on the front):", ""]
        text += [f"- {p.board} {p.variant} {p.lanes}x{p.taps}: {p.why}" for p in unknown]
    if idle:
        text += ["", "Without an engine on any board, or fitting no size:", ""]
        text += [f"- {v}: golden {a:.4f}, {b:.2f} b/w ({m})" for v, a, b, m in idle]
    (out_dir / "pareto.md").write_text("\n".join(text) + "\n")
    (out_dir / "results.json").write_text(json.dumps(
        {"command": command, "points": [dataclasses.asdict(p) for p in points],
         "pareto": [dataclasses.asdict(p) for p in front]}, indent=1) + "\n")
    for board in sorted({p.board for p in points}):
        mine = [p for p in points if p.board == board and p.runs and p.fits
                and p.logic != "unknown"]
        if not mine:
            continue
        placed = any(p.lut4 is not None for p in mine)
        fig, axes = plt.subplots(1, 3 if placed else 2, figsize=(16 if placed else 11, 4.5))
        xs = [("inferences_per_s", "inferences per second (min(build clock, Fmax))"
               if placed else "inferences per second (build clock)"),
              ("bits_per_weight", "weight bits per weight")]
        if placed:
            xs.append(("lut4", "LUT4 (placed or estimated)"))
        for axis, (key, label) in zip(axes, xs, strict=True):
            for scheme in sorted({p.scheme for p in mine}):
                sel = [p for p in mine if p.scheme == scheme]
                axis.scatter([getattr(p, key) for p in sel], [p.accuracy for p in sel],
                             label=scheme, s=14)
            axis.set(xlabel=label, ylabel="golden accuracy", title=board)
        if placed:
            real = [p for p in mine if p.logic == "placed"]
            axes[2].scatter([p.lut4 for p in real], [p.accuracy for p in real], s=60,
                            facecolors="none", edgecolors="k", label="placed and routed")
            axes[2].legend(fontsize=7)
        ours = [p for p in front if p.board == board]
        axes[0].plot([p.inferences_per_s for p in ours], [p.accuracy for p in ours], "k--",
                     lw=0.8, label="Pareto front")
        axes[0].set(xscale="log")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / f"pareto-{board}.png", dpi=110)
        plt.close(fig)
    return out_dir / "pareto.md"


def summary(points: list[Point]) -> list[str]:
    """Lines for the terminal: the front per board, then how many points were too large
    for their device."""
    lines = _table(pareto(points))
    misfits = [p for p in points if p.runs and not p.fits]
    if misfits:
        lines.append(f"{len(misfits)} points too large for their device (logic or DSP "
                     f"estimate): see pareto.md")
    unknown = sum(p.logic == "unknown" for p in points)
    if unknown:
        lines.append(f"{unknown} points without a logic estimate: see pareto.md")
    return lines
