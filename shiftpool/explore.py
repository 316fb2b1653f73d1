"""``shiftpool explore``: every scheme and its main knobs, on every engine size whose
memories fit each board; the Pareto front of accuracy, speed and weight bits.

For each variant (a scheme with its knobs: FLightNN's k=1 target, pool sizes and
run-time activation bits, RBNN rounds, MLG ranks, and int8 beside them) the model is
compressed once (fine-tuned on the user's data) and evaluated by the golden model on
the test split. For each board and each engine size (lanes x taps) the configuration
is fitted, checked against the board's memories
(:func:`shiftpool.boards.memory_fit.board_memory_fit`, the estimate that equals
yosys' block count) and laid out by the compiler, whose cycle model gives the cycles
per inference; inferences per second are at the board's build clock (its timing
target, not a measured Fmax). Nothing here is placed and routed: logic (LUT4, DSP) and
Fmax come from ``shiftpool build --fit`` on the chosen points, and the table says so.

The Pareto front of a board keeps the points no other point beats on all three of
golden accuracy (higher), inferences per second (higher) and weight bits per weight
(lower). Schemes without an accelerator yet (RBNN, MLG) appear with their accuracy and
bits per weight and no speed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from .bench import weight_bits
from .boards.memory_fit import board_memory_fit
from .boards.registry import get_board
from .hw.config import POOL_GROUP, ConfigError
from .sw.compile.cycles import inference_cycles
from .sw.compile.fit import fit_config
from .sw.compile.image import compile_model
from .sw.schemes.compress import compress, evaluate

__all__ = ["DEFAULT_SIZES", "Point", "explore", "pareto", "summary", "variants",
           "write_results"]

#: Engine sizes tried on every board (lanes x taps; the pool engine has 8 taps).
DEFAULT_SIZES = tuple((lanes, taps) for lanes in (1, 2, 4, 8) for taps in (1, 2, 4, 8))
#: Run-time activation bits tried for every pool model.
POOL_BITS = (8, 5, 4, 3)


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
    inferences_per_s: float = 0.0
    block_ram: int = 0          # blocks of the device's block RAM (EBR, DP16KD, BSRAM)
    spram: int = 0              # iCE40 UltraPlus SPRAMs
    memory: str = ""            # the board's memory estimate, one line

    @property
    def runs(self) -> bool:
        return self.cycles > 0


def variants(float_model) -> list[tuple[str, str, dict]]:
    """``(label, scheme, options)`` of the knobs explored for ``float_model``."""
    out = [("int8", "int8", {}), ("lightnn2", "lightnn2", {})]
    out += [(f"flightnn k1={t}", "flightnn", {"k1_target": t}) for t in (0.5, 0.9)]
    out += [(f"pool S={s}", "pool", {"pool_size": s}) for s in (16, 64)]
    mlp = [layer.kind for layer in float_model.layers] == ["dense", "relu", "dense"]
    if mlp:
        out += [(f"rbnn rounds={r}", "rbnn", {"rounds": r}) for r in (1, 3)]
    out += [(f"mlg bc={b}", "mlg", {"bc": b}) for b in (4, 8)]
    return out


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
            seed: int = 0, step: Callable[[str], None] = print) -> list[Point]:
    """Every variant on every size of every board (module docstring)."""
    x_test, y_test = data[2], data[3]
    points = []
    for label, scheme, options in variants(float_model):
        qm = _compressed(float_model, data, label, scheme, options, epochs, seed, step)
        if qm is None:
            continue
        precisions = POOL_BITS if scheme == "pool" else (None,)
        for bits in precisions:
            name = label if bits is None else f"{label} {bits}b"
            accuracy = (float(qm.meta["accuracy"]) if bits is None
                        else evaluate(qm, x_test, y_test, bits=bits))
            for board in boards:
                points += _on_board(qm, name, scheme, accuracy, board, sizes, bits)
    return points


def _on_board(qm, name, scheme, accuracy, board, sizes, bits) -> list[Point]:
    clock = get_board(board).clock_hz
    base = dict(board=board, variant=name, scheme=scheme, accuracy=accuracy)
    try:
        probe = fit_config(qm, lanes=1, taps=POOL_GROUP if scheme == "pool" else 1)
    except ConfigError as exc:
        # No accelerator for this scheme (yet): accuracy and bits per weight only.
        return [Point(**base, bits_per_weight=_bpw(qm, None), memory=str(exc))]
    found = []
    for lanes, taps in sorted(set((lanes, POOL_GROUP if probe.engine == "pool" else taps)
                                  for lanes, taps in sizes)):
        try:
            config = fit_config(qm, lanes=lanes, taps=taps)
            cycles = inference_cycles(compile_model(qm, config, bits=bits))
        except ConfigError:
            continue
        fit = board_memory_fit(board, config)
        if fit.fits:
            found.append(Point(**base, bits_per_weight=_bpw(qm, config), lanes=lanes,
                               taps=taps, cycles=cycles, inferences_per_s=clock / cycles,
                               block_ram=fit.bram_used, spram=fit.spram_used,
                               memory=fit.message))
    if not found:
        config = fit_config(qm, lanes=1, taps=probe.taps)
        found.append(Point(**base, bits_per_weight=_bpw(qm, config),
                           memory=board_memory_fit(board, config).message))
    return found


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
    """The points no other point of the same board beats on accuracy (higher),
    inferences per second (higher) and bits per weight (lower) at once."""
    front = []
    for p in points:
        if not p.runs:
            continue
        better = [q for q in points if q.board == p.board and q.runs and q is not p
                  and q.accuracy >= p.accuracy and q.inferences_per_s >= p.inferences_per_s
                  and q.bits_per_weight <= p.bits_per_weight
                  and (q.accuracy, q.inferences_per_s, -q.bits_per_weight)
                  != (p.accuracy, p.inferences_per_s, -p.bits_per_weight)]
        if not better:
            front.append(p)
    return sorted(front, key=lambda p: (p.board, -p.inferences_per_s))


def _table(points: list[Point]) -> list[str]:
    head = ("| board | variant | engine | golden acc | b/w | cycles | inf/s at build clock | "
            "block RAM | SPRAM | memory |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        engine = f"{p.lanes}x{p.taps}" if p.runs else "-"
        speed = (f"{p.cycles} | {p.inferences_per_s:.0f} | {p.block_ram} | {p.spram}"
                 if p.runs else "- | - | - | -")
        lines.append(f"| {p.board} | {p.variant} | {engine} | {p.accuracy:.4f} | "
                     f"{p.bits_per_weight:.2f} | {speed} | {p.memory} |")
    return lines


def write_results(points: list[Point], out_dir: Path, command: str) -> Path:
    """``pareto.md`` (the front per board, then what runs on no engine), ``results.json``
    (every point) and one plot per board (``pareto-BOARD.png``: accuracy against
    inferences per second and against bits per weight). Returns the table's path."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    front = pareto(points)
    idle = sorted({(p.variant, p.accuracy, p.bits_per_weight, p.memory)
                   for p in points if not p.runs})
    text = ["# shiftpool explore", "", f"`{command}`", "",
            "Pareto front per board (golden accuracy, inferences per second, bits per "
            "weight). Memory fit is yosys' block count (estimate tested against it); "
            "inferences per second are at the board's build clock; logic and Fmax are "
            "not estimated here: build a point with `shiftpool build --fit`.", ""]
    text += _table(front)
    if idle:
        text += ["", "Without an engine on any board, or fitting no size:", ""]
        text += [f"- {v}: golden {a:.4f}, {b:.2f} b/w ({m})" for v, a, b, m in idle]
    (out_dir / "pareto.md").write_text("\n".join(text) + "\n")
    (out_dir / "results.json").write_text(json.dumps(
        {"command": command, "points": [dataclasses.asdict(p) for p in points],
         "pareto": [dataclasses.asdict(p) for p in front]}, indent=1) + "\n")
    for board in sorted({p.board for p in points}):
        mine = [p for p in points if p.board == board and p.runs]
        if not mine:
            continue
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
        for scheme in sorted({p.scheme for p in mine}):
            sel = [p for p in mine if p.scheme == scheme]
            left.scatter([p.inferences_per_s for p in sel], [p.accuracy for p in sel],
                         label=scheme, s=14)
            right.scatter([p.bits_per_weight for p in sel], [p.accuracy for p in sel],
                          label=scheme, s=14)
        ours = [p for p in front if p.board == board]
        left.plot([p.inferences_per_s for p in ours], [p.accuracy for p in ours], "k--",
                  lw=0.8, label="Pareto front")
        left.set(xscale="log", xlabel="inferences per second (build clock)",
                 ylabel="golden accuracy", title=board)
        right.set(xlabel="weight bits per weight", ylabel="golden accuracy", title=board)
        left.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / f"pareto-{board}.png", dpi=110)
        plt.close(fig)
    return out_dir / "pareto.md"


def summary(points: list[Point]) -> list[str]:
    """Lines for the terminal: the front per board."""
    return _table(pareto(points))
