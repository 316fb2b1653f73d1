"""``shiftpool bench``: the figures of ``docs/results.md``, measured in one run.

For each engine size (lanes x taps) and each scheme of the built-in digits model it
records accuracy (golden model, whole test split), cycles per inference (counted by
the RTL on a slice of the test split and checked against the cycle model), weight
storage in bits per weight, and every figure's ratio to the int8 baseline of the
same engine size, measured in the same run.

It also measures the simulation itself (:func:`measure_speed`): simulated cycles and
inferences per second of the demo design on each simulator, for the event-driven
bench and, beside it in the same run, the first, per-cycle one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .sim.flow import first_mismatch, simulate
from .sw.compile.fit import fit_config
from .sw.compile.image import compile_model
from .sw.model.file import MLG_WIDTH_FIELD, QuantModel
from .sw.schemes import golden

__all__ = ["BenchRow", "SpeedRow", "bench_schemes", "mac_count", "measure_speed", "run_bench",
           "weight_bits", "write_report"]



def mac_count(model: QuantModel) -> int:
    """Multiply-accumulates of one inference: every weight of a dense layer once, of a
    conv3x3 layer once per output position."""
    total = 0
    for layer in model.layers:
        if layer.is_mac:
            positions = int(np.prod(layer.out_shape[1:])) if layer.kind == "conv3x3" else 1
            total += len(layer.bias) * layer.fan_in * positions
    return total


def weight_bits(model: QuantModel, code_width: int) -> tuple[int, int]:
    """``(weights, bits)``: the MAC layers' weight count and the bits their codes
    need without any padding (FLightNN: ``k`` codes per weight, int8: one byte; pool:
    an index per 8-vector plus the pool, int8 layers a byte per weight; rbnn: the
    storage slots, ``rounds`` binary weights each; mlg: the stored bases and
    coefficients at ``q`` bits per value, an odd level of ``+-(2**q - 1)``)."""
    from .sw.schemes.pool import index_width

    weights = bits = 0
    if model.scheme == "pool":
        bits += int(np.size(model.pool)) * model.pool_bits
    for layer in model.layers:
        if not layer.is_mac:
            continue
        fan_in = layer.fan_in
        weights += len(layer.bias) * fan_in
        if layer.is_pool:
            bits += int(np.size(layer.index)) * index_width(len(model.pool))
        elif layer.slots is not None:       # rbnn: each slot once, whatever the rounds
            bits += int(np.size(layer.slots)) * layer.slot_bits
        elif layer.is_mlg:                  # mlg: the bases and coefficients, q bits each
            bits += sum(int(np.size(getattr(layer, name))) * getattr(model, field)
                        for name, field in MLG_WIDTH_FIELD.items()
                        if getattr(layer, name) is not None)
        elif layer.terms is not None:
            bits += int(np.sum(layer.k)) * fan_in * code_width
        else:
            bits += len(layer.bias) * fan_in * 8
    return weights, bits


@dataclasses.dataclass
class BenchRow:
    """One scheme on one engine size."""

    scheme: str
    engine: str
    lanes: int
    taps: int
    accuracy: float
    k1_share: float | None
    cycles: int                 # per inference, counted by the RTL
    rtl_inputs: int             # test images the RTL ran
    rtl_equal: int              # of those, bit-identical to the golden model
    weights: int
    code_bits: int              # the weights' codes, unpadded
    image_bits: int             # the weight memory image as loaded (rows x width)
    speedup_vs_int8: float = 0.0
    code_bits_vs_int8: float = 0.0

    @property
    def code_bits_per_weight(self) -> float:
        return self.code_bits / self.weights

    @property
    def image_bits_per_weight(self) -> float:
        return self.image_bits / self.weights


def bench_schemes() -> list:
    """The schemes ``bench`` measures: every registered scheme that has an engine, the
    baseline among them (:data:`~shiftpool.sw.schemes.registry.BASELINE`)."""
    from .sw.schemes.registry import schemes

    return [scheme for scheme in schemes().values() if scheme.engine]


def run_bench(float_model, data, sizes, simulator: str = "verilator", samples: int = 20,
              build_dir=None, progress=print, compress_options=None
              ) -> tuple[list[BenchRow], list[str]]:
    """Measure every scheme of :func:`bench_schemes` (its default options, at each of
    its run-time precisions) on every ``(lanes, taps)`` in ``sizes``. Returns the rows
    and one line per scheme or size left out, naming why (a scheme with no form for
    this model, an engine that does not take the size)."""
    from .sw.compile.fit import ConfigError
    from .sw.schemes.compress import compress
    from .sw.schemes.registry import BASELINE

    x_train, y_train, x_test, y_test = data
    models, skipped = {}, []
    for scheme in bench_schemes():
        progress(f"compress {scheme.name}")
        try:
            models[scheme.name] = compress(
                float_model, scheme.name, x_train=x_train, y_train=y_train, x_test=x_test,
                y_test=y_test, progress=False, **(compress_options or {}))
        except ValueError as exc:
            skipped.append(f"{scheme.name}: not measured: {exc}")
    if BASELINE not in models:
        raise RuntimeError(f"bench: the baseline {BASELINE} could not be compressed: "
                           f"{skipped}")
    rows = []
    for lanes, taps in sizes:
        size_rows = []
        for scheme in bench_schemes():
            model = models.get(scheme.name)
            if model is None:
                continue
            try:
                config = fit_config(model, lanes=lanes, taps=taps)
            except ConfigError as exc:
                skipped.append(f"{lanes}x{taps} {scheme.name}: not measured: {exc}")
                continue
            for bits in scheme.run_bits or (None,):
                name = scheme.name if bits is None else f"{scheme.name} {bits}b"
                size_rows.append(_measure(name, model, config, bits, data, samples,
                                          simulator, build_dir, progress))
        base = next((r for r in size_rows if r.scheme == BASELINE), None)
        if base is None:
            raise RuntimeError(f"bench: {lanes}x{taps}: the baseline {BASELINE} does not "
                               f"run at this size: {skipped[-1]}")
        for r in size_rows:
            r.speedup_vs_int8 = base.cycles / r.cycles
            r.code_bits_vs_int8 = r.code_bits / base.code_bits
        rows.extend(size_rows)
    return rows, skipped


def _measure(name, model, config, bits, data, samples, simulator, build_dir, progress
             ) -> BenchRow:
    """One bench row: ``model`` on ``config`` at run-time precision ``bits``, its first
    ``samples`` test images through the RTL, bit-exact and cycle-exact."""
    x_test, y_test = data[2], data[3]
    lanes, taps = config.lanes, config.taps
    image = compile_model(model, config, bits=bits)
    x = model.quantize_input(x_test[:samples])
    progress(f"{lanes}x{taps} {name}: RTL on {simulator}, {len(x)} images")
    result = simulate(model, x, config, simulator=simulator, build_dir=build_dir, bits=bits)
    mismatch = first_mismatch(model, x, result)
    if mismatch or not result.cycles_match:
        raise RuntimeError(f"{lanes}x{taps} {name}: RTL disagrees: "
                           f"{mismatch or 'cycle count'}")
    weights, code_bits = weight_bits(model, config.code_width)
    accuracy = (float(model.meta["accuracy"]) if bits is None else float(np.mean(
        golden.run(model, model.quantize_input(x_test), bits=bits).argmax(1) == y_test)))
    return BenchRow(
        scheme=name, engine=config.engine, lanes=lanes, taps=taps, accuracy=accuracy,
        k1_share=model.meta.get("k1_share"), cycles=int(result.cycles.max()),
        rtl_inputs=len(x), rtl_equal=int(result.equal.sum()), weights=weights,
        code_bits=code_bits, image_bits=sum(
            len(image.regions[r]) * image.region_width(r) for r in image.weight_regions))


#: Test images each speed run simulates by default, per (simulator, bench mode): enough
#: for a steady figure in tens of seconds at most (Icarus runs this design at about
#: 10k cycles per second, about 3 inferences).
SPEED_IMAGES = {("verilator", "event"): 360, ("verilator", "cycle"): 40,
                ("icarus", "event"): 20, ("icarus", "cycle"): 10}
#: The demo design the speed runs simulate: the FLightNN digits model on 2 lanes x 4 taps.
SPEED_DESIGN = ("flightnn", 2, 4)


@dataclasses.dataclass
class SpeedRow:
    """One speed run: a simulator and a bench mode on the demo design.

    ``sim_cycles``, ``wall`` and ``cpu`` cover the inferences, as the bench timed them
    (from the first input word to the last output word); ``total_wall`` is the whole
    run as the caller sees it (simulator start-up and the load included)."""

    simulator: str
    mode: str
    images: int
    cycles_per_inference: int
    sim_cycles: int
    wall: float
    cpu: float
    total_wall: float
    speedup: float = 0.0         # cycles/s over the per-cycle bench's on this simulator

    @property
    def cycles_per_s(self) -> float:
        return self.sim_cycles / self.wall

    @property
    def cycles_per_cpu_s(self) -> float:
        return self.sim_cycles / self.cpu

    @property
    def inferences_per_s(self) -> float:
        return self.images / self.wall

    @property
    def inferences_per_s_total(self) -> float:
        return self.images / self.total_wall


def measure_speed(float_model, data, simulators=("verilator", "icarus"), images=None,
                  build_dir=None, progress=print, compress_options=None) -> list[SpeedRow]:
    """Time the demo design (:data:`SPEED_DESIGN`) on each simulator in each bench mode
    (``shiftpool.sim.runner.BENCH_MODES``: the event-driven bench and the per-cycle
    one), each run on the first ``images`` test images (default
    :data:`SPEED_IMAGES`; a number caps them all). Builds happen before the clock
    starts. Every run must be bit-exact and cycle-exact.

    Raises
    ------
    RuntimeError
        If a run disagrees with the golden model or the cycle model.
    """
    import time

    from .sim.runner import BENCH_MODES, MODE_RECIPE, build
    from .sw.schemes.compress import compress

    x_train, y_train, x_test, y_test = data
    scheme, lanes, taps = SPEED_DESIGN
    progress(f"speed: compress {scheme}")
    model = compress(float_model, scheme, x_train=x_train, y_train=y_train, x_test=x_test,
                     y_test=y_test, progress=False, **(compress_options or {}))
    config = fit_config(model, lanes=lanes, taps=taps)
    rows = []
    for simulator in simulators:
        for mode in BENCH_MODES:
            count = SPEED_IMAGES[simulator, mode]
            count = min(count, images) if images else count
            x = model.quantize_input(x_test[:count])
            build(config, simulator, build_dir, recipe=MODE_RECIPE[mode])
            progress(f"speed: {simulator}, {mode} bench, {len(x)} images")
            t0 = time.monotonic()
            result = simulate(model, x, config, simulator=simulator, build_dir=build_dir,
                              bench_mode=mode)
            total = time.monotonic() - t0
            mismatch = first_mismatch(model, x, result)
            if mismatch or not result.cycles_match:
                raise RuntimeError(f"speed run {simulator} {mode}: RTL disagrees: "
                                   f"{mismatch or 'cycle count'}")
            run = result.run
            rows.append(SpeedRow(simulator=simulator, mode=mode, images=len(x),
                                 cycles_per_inference=int(result.cycles.max()),
                                 sim_cycles=run.sim_cycles, wall=run.wall, cpu=run.cpu,
                                 total_wall=total))
        base = next(r for r in rows if r.simulator == simulator and r.mode == "cycle")
        for r in rows:
            if r.simulator == simulator:
                r.speedup = r.cycles_per_s / base.cycles_per_s
    return rows


def _speed_table(rows: list[SpeedRow]) -> list[str]:
    out = ["| simulator | bench | images | cycles/s | inferences/s | cycles/CPU-s | "
           "inferences/s incl. start-up and load | vs per-cycle bench |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r.simulator} | {r.mode} | {r.images} | {r.cycles_per_s:,.0f} | "
                   f"{r.inferences_per_s:.1f} | {r.cycles_per_cpu_s:,.0f} | "
                   f"{r.inferences_per_s_total:.1f} | {r.speedup:.1f}x |")
    return out


def _table(rows: list[BenchRow]) -> list[str]:
    out = ["| lanes x taps | scheme | accuracy | k=1 share | cycles/inference | speed vs int8 "
           "| bits/weight (codes) | bits/weight (image) | storage vs int8 | RTL == golden |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        k1 = f"{r.k1_share:.3f}" if r.k1_share is not None else "-"
        out.append(f"| {r.lanes} x {r.taps} | {r.scheme} | {r.accuracy:.4f} | {k1} | "
                   f"{r.cycles} | {r.speedup_vs_int8:.2f}x | {r.code_bits_per_weight:.2f} | "
                   f"{r.image_bits_per_weight:.2f} | {r.code_bits_vs_int8:.2f}x | "
                   f"{r.rtl_equal}/{r.rtl_inputs} |")
    return out


def _plot(rows: list[BenchRow], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({(r.lanes, r.taps) for r in rows})
    labels = [f"{lanes}x{taps}" for lanes, taps in sizes]
    # One bar per scheme measured at its own precision on every size (the run-time
    # precision rows, and schemes some sizes leave out, are in the table only).
    names = [name for name in dict.fromkeys(r.scheme for r in rows)
             if all(any(r.scheme == name and (r.lanes, r.taps) == s for r in rows)
                    for s in sizes)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        cycles = [next(r.cycles for r in rows if (r.lanes, r.taps) == s and r.scheme == name)
                  for s in sizes]
        ax.bar(np.arange(len(sizes)) + i * width, cycles, width, label=name)
    ax.set_xticks(np.arange(len(sizes)) + width * (len(names) - 1) / 2, labels)
    ax.set_xlabel("engine lanes x taps")
    ax.set_ylabel("cycles per inference")
    ax.set_title("digits CNN: cycles per inference (RTL)")
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def _speed_text(speed: list[SpeedRow]) -> list[str]:
    scheme, lanes, taps = SPEED_DESIGN
    return [
        "## Simulation speed", "",
        f"The demo design ({scheme}, {lanes} lanes x {taps} taps, digits test images) "
        "through the RTL, bit-exact and cycle-exact against the golden and cycle models. "
        "*event*: the event-driven bench (clock in the simulator, Python only at "
        "handshakes); *cycle*: the first bench (Python on every cycle, cocotb's default "
        "build and clock), in the same run. *cycles/s*, *inferences/s*: simulated clock "
        "cycles (input, compute and output phases) and inferences per wall second from "
        "the first input word to the last output word; *cycles/CPU-s*: per CPU second "
        "of the simulator's process (simulator and Python), which does not depend on what "
        "else the machine runs; *incl. start-up and load*: the whole run, simulator "
        "start-up and the memory load included.", "",
        *_speed_table(speed), "",
    ]


def write_report(rows: list[BenchRow], out_dir: Path, command: str, float_accuracy: float,
                 wall: float, speed: list[SpeedRow] | None = None,
                 skipped: list[str] | None = None) -> Path:
    """Write ``results.md`` and ``results.json`` into ``out_dir``, and ``cycles.png``
    when there are ``rows``; ``speed`` adds the simulation speed table, ``skipped``
    (from :func:`run_bench`) the schemes and sizes left out and why."""
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {
        "command": command, "shiftpool": __version__, "python": sys.version.split()[0],
        "machine": platform.machine(), "float_accuracy": float_accuracy, "wall_s": wall,
        "rows": [dict(dataclasses.asdict(r), code_bits_per_weight=r.code_bits_per_weight,
                      image_bits_per_weight=r.image_bits_per_weight) for r in rows],
        "speed": [dict(dataclasses.asdict(r), cycles_per_s=r.cycles_per_s,
                       cycles_per_cpu_s=r.cycles_per_cpu_s,
                       inferences_per_s=r.inferences_per_s,
                       inferences_per_s_total=r.inferences_per_s_total)
                  for r in speed or []],
        "skipped": list(skipped or []),
    }
    text = [
        "# Results", "",
        f"Measured by `{command}` (shiftpool {__version__}, {wall:.0f} s). Built-in digits "
        f"CNN, float accuracy {float_accuracy:.4f} on the 360-image held-out split.", "",
    ]
    if rows:
        _plot(rows, out_dir / "cycles.png")
        text += [
            "- *accuracy*: golden integer model on the whole test split;",
            "- *cycles/inference*: counted by the RTL's cycle counter on the first images of "
            "the split, equal to the cycle model; *speed vs int8*: int8 cycles / these cycles "
            "on the same engine size;",
            "- *bits/weight (codes)*: the weight codes without padding (FLightNN: k codes of "
            "exp_bits + 2 bits; pool: an index per 8-vector, the pool, and the int8 first "
            "layer); *(image)*: the weight memory image as loaded, padding to "
            "lanes x taps included (pool: indices, pool and int8 rows; the lookup tables are "
            "built on chip); *storage vs int8*: codes bits / int8 codes bits.",
            "- *SCHEME Nb*: an engine that switches precision at run time (the weight-pool "
            "engine, default pool size) at N-bit activations; its accuracy is at that "
            "precision.", "",
            *_table(rows), "", "![cycles per inference](cycles.png)", "",
        ]
    if skipped:
        text += ["Not measured:", "", *(f"- {line}" for line in skipped), ""]
    if speed:
        text += _speed_text(speed)
    tmp = out_dir / "results.md.tmp"
    tmp.write_text("\n".join(text))
    os.replace(tmp, out_dir / "results.md")
    (out_dir / "results.json").write_text(json.dumps(info, indent=2) + "\n")
    return out_dir / "results.md"
