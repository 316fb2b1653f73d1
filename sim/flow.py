"""The steps that need the gateware: generate a design folder (the accelerator's
Verilog, manifest and memory images) and run inputs through the RTL against the golden
model.

Each step is a plain function with typed arguments; :mod:`shiftpool.cli` only parses
arguments and prints. The steps without gateware (fitting a configuration, reading
a manifest or a model file) are in :mod:`shiftpool.sw`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..hw.config import AcceleratorConfig
from ..sw.compile.cycles import inference_cycles
from ..sw.compile.fit import fit_config
from ..sw.compile.image import compile_model
from ..sw.compile.manifest import manifest
from ..sw.model.file import QuantModel, load_model
from ..sw.schemes import golden

__all__ = ["SimResult", "first_mismatch", "generate", "simulate"]
def generate(model_path: Path, out_dir: Path, config: AcceleratorConfig | None = None,
             force: bool = False, bits: int | None = None, mode="direct", **fit) -> dict:
    """Write ``shiftpool_top.v``, ``manifest.json`` and ``image.json`` (the memory
    images to load) for ``model_path`` into ``out_dir``; ``bits`` and ``mode`` are a
    pool model's run-time precision and evaluation order, written into the layer
    program.

    The folder is filled in a temporary sibling and renamed into place, so it is
    either complete or absent. An existing ``out_dir`` is replaced only with ``force``.

    Returns the manifest.
    """
    from .runner import write_verilog

    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise FileExistsError(f"output folder {out_dir} exists; pass --force to replace it")
    model = load_model(model_path)
    config = config or fit_config(model, mode=mode, **fit)
    image = compile_model(model, config, bits=bits, mode=mode)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        write_verilog(config, tmp / "shiftpool_top.v")
        info = manifest(image, Path(model_path))
        (tmp / "manifest.json").write_text(json.dumps(info, indent=2) + "\n")
        (tmp / "image.json").write_text(json.dumps(
            {name: [f"{row:x}" for row in rows] for name, rows in image.regions.items()}))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


@dataclasses.dataclass
class SimResult:
    """Outputs of the RTL beside the golden model's for the same inputs."""

    rtl: np.ndarray             # (N, classes) int64
    golden: np.ndarray          # (N, classes) int64
    cycles: np.ndarray          # (N,) cycles the RTL counted
    predicted_cycles: int       # the cycle model's prediction
    #: (N, classes): the clock cycle each output word left the accelerator at.
    out_cycles: np.ndarray | None = None
    #: The bench's run (:class:`shiftpool.sim.runner.BenchRun`): timing, speed.
    run: object = None
    #: Waveform of the first mismatching inference (``simulate(waves=...)``).
    waves: Path | None = None
    #: The cycle, in that waveform, at which the first differing word left, and its
    #: time in ns.
    waves_cycle: int | None = None
    waves_ns: int | None = None

    @property
    def equal(self) -> np.ndarray:
        """Per input: every output word equal."""
        return (self.rtl == self.golden).all(axis=1)

    @property
    def cycles_match(self) -> bool:
        return bool((self.cycles == self.predicted_cycles).all())

    def first_difference(self) -> tuple[int, int] | None:
        """``(input, output index)`` of the first differing word, or ``None``."""
        bad = np.flatnonzero(~self.equal)
        if len(bad) == 0:
            return None
        n = int(bad[0])
        return n, int(np.flatnonzero(self.rtl[n] != self.golden[n])[0])


def first_mismatch(model: QuantModel, inputs: np.ndarray, result: SimResult) -> str | None:
    """Where the RTL first differs from the golden model: input, output index, both
    values, the clock cycle the word left the accelerator at (when the bench recorded
    it) and the waveform of that inference (when one was written); ``None`` if they
    agree everywhere."""
    first = result.first_difference()
    if first is None:
        return None
    n, i = first
    text = (f"input {n}: final layer {len(model.layers) - 1}, output {i}: RTL "
            f"{result.rtl[n, i]} != golden {result.golden[n, i]}")
    if result.out_cycles is not None:
        text += f", left the accelerator at cycle {int(result.out_cycles[n, i])}"
    if result.waves is not None:
        text += (f"; waveform of input {n} alone: {result.waves} (the word leaves at "
                 f"cycle {result.waves_cycle}, {result.waves_ns} ns)")
    return text + f" ({int((~result.equal).sum())} of {len(inputs)} inputs differ)"


def simulate(model: QuantModel, inputs: np.ndarray, config: AcceleratorConfig,
             simulator: str = "verilator", build_dir: Path | None = None,
             progress: bool = False, seed: int = 0, idle_gap: float = 0.0,
             back_pressure: float = 0.0, bits: int | None = None,
             mode="direct", waves: Path | None = None, bench_mode: str = "event"
             ) -> SimResult:
    """Run integer ``inputs`` through the RTL and the golden model (a pool model's
    pool layers at run-time precision ``bits``, all planes by default, in ``mode``).

    With ``waves`` (a path), the first input whose outputs differ is run again alone
    (after the same load, with the same seed and stream settings) from a build that
    traces, and its waveform is written there (the suffix the simulator's format's:
    ``.vcd`` from Verilator, ``.fst`` from Icarus; ``SimResult.waves`` names it).
    ``bench_mode`` is the bench's (``shiftpool.sim.runner.BENCH_MODES``).
    """
    from .runner import run_image

    inputs = golden.check_inputs(model, inputs)
    image = compile_model(model, config, bits=bits, mode=mode)
    expected = golden.run(model, inputs, bits=bits, mode=mode)
    predicted = inference_cycles(image)
    bench = dict(simulator=simulator, build_dir=build_dir, seed=seed, idle_gap=idle_gap,
                 back_pressure=back_pressure, mode=bench_mode, expected_cycles=predicted)
    # The bench's scoreboard checks every inference against both models as it runs.
    run = run_image(image, inputs, progress=progress, expected=expected, **bench)
    result = SimResult(rtl=run.outputs, golden=expected, cycles=run.cycles,
                       predicted_cycles=predicted, out_cycles=run.out_cycles, run=run)
    first = result.first_difference()
    if waves is not None and first is not None:
        n, i = first
        again = run_image(image, inputs[n:n + 1], waves=Path(waves),
                          expected=expected[n:n + 1], **bench)
        result.waves, result.waves_cycle = again.waves, int(again.out_cycles[0, i])
        result.waves_ns = result.waves_cycle * again.clock_ns
    return result
