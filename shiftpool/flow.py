"""The steps the command line chains: fit a configuration to a model, generate the
accelerator's Verilog and manifest, and run inputs through the RTL against the golden
model.

Each step is a plain function with typed arguments; :mod:`shiftpool.cli` only parses
arguments and prints.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from . import __version__
from .hw.config import POOL_GROUP, AcceleratorConfig, ConfigError, ceil_log2
from .sw import golden
from .sw.compile import ENGINE_FOR_SCHEME, Image, compile_model
from .sw.cycles import inference_cycles, layer_cycles
from .sw.model import ModelError, QuantModel, load_model

__all__ = [
    "MANIFEST_FORMAT", "SimResult", "fit_config", "generate", "load_manifest", "simulate",
    "first_mismatch",
]

MANIFEST_FORMAT = "shiftpool-manifest"
#: Depths big enough for any model the built-in flows make; :func:`fit_config`
#: shrinks them to what the model uses.
_ROOMY = dict(act_depth=1 << 16, weight_depth=1 << 16, tap_depth=1 << 12, bias_depth=1 << 12,
              program_depth=256, out_depth=1 << 12, max_dim=4096)


def fit_config(model: QuantModel, lanes: int = 4, taps: int = 8, mode="direct",
               **fields) -> AcceleratorConfig:
    """The smallest configuration with ``lanes`` x ``taps`` that runs ``model``.

    A pool model gets the pool engine, whose ``taps`` is always 8 (one group), so
    ``taps`` is ignored for it; ``mode`` (as :func:`shiftpool.sw.golden.run` takes it)
    sizes its precompute store for the layers run in precompute mode.

    Memory depths, ``max_fan_in`` and ``max_dim`` are taken from the model; any
    :class:`AcceleratorConfig` field given in ``fields`` overrides the fitted value
    (and is then checked against the model).

    Raises
    ------
    ConfigError
        If a field is invalid or an explicit one is too small for the model.
    """
    engine = ENGINE_FOR_SCHEME.get(model.scheme)
    if engine is None:
        raise ConfigError(f"no engine runs scheme {model.scheme!r} yet")
    fan_in = max(layer.fan_in for layer in model.layers if layer.is_mac)
    sides = [d for layer in model.layers for d in layer.out_shape[1:]]
    sides += list(model.input_shape[1:])
    base = dict(engine=engine, lanes=lanes, taps=taps, act_bits=model.act_bits,
                exp_bits=max(model.exp_bits, 1), max_fan_in=fan_in, **_ROOMY)
    if engine == "pool":
        # The pool engine takes groups of 8; its table is sized for the model's pool.
        base.update(taps=POOL_GROUP, pool_size=1 << ceil_log2(max(2, len(model.pool))),
                    pool_bits=model.pool_bits, lut_bits=model.lut_bits,
                    index_depth=1 << 16)
        steps = [model.layers[i].fan_in // POOL_GROUP
                 for i, m in golden.layer_modes(model, mode).items() if m == "precompute"]
        base.update(precompute_steps=max(steps, default=0))
    roomy = AcceleratorConfig(**base)
    used = {name: max(1, info["used"]) for name, info in
            compile_model(model, roomy, mode=mode).memory_map().items()}
    sizes = [int(np.prod(model.input_shape))]
    sizes += [int(np.prod(layer.out_shape)) for layer in model.layers[:-1]]
    fitted = dict(base, act_depth=max(sizes), weight_depth=used["weights"],
                  tap_depth=used["taps"], bias_depth=used["bias"],
                  program_depth=used["program"], out_depth=model.classes,
                  max_dim=max(sides, default=1))
    if engine == "pool":
        fitted.update(index_depth=used["indices"])
    fitted.update(fields)
    config = AcceleratorConfig.from_dict(fitted)
    compile_model(model, config, mode=mode)     # raises ConfigError naming what does not fit
    return config


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def manifest(image: Image, model_path: Path | None = None) -> dict:
    """What :func:`generate` records about a design: enough to rebuild and drive it."""
    per_layer = layer_cycles(image)
    extra = {"bits": {str(i): b for i, b in image.planes.items()},
             "modes": {str(i): m for i, m in image.modes.items()}} if image.planes else {}
    return {**extra,
        "format": MANIFEST_FORMAT, "version": 1, "shiftpool": __version__,
        "toplevel": "shiftpool_top", "verilog": "shiftpool_top.v",
        "config": image.config.as_dict(), "config_hash": image.config.hash,
        "model": {
            "file": str(model_path) if model_path else None,
            "sha256": _sha256(model_path) if model_path else None,
            "scheme": image.model.scheme,
            "input_shape": list(image.model.input_shape), "classes": image.model.classes,
        },
        "memory_map": image.memory_map(),
        "cycles": {"per_inference": sum(per_layer), "per_layer": per_layer},
    }


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
    from .sim.runner import write_verilog

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


def load_manifest(path: Path) -> AcceleratorConfig:
    """The configuration recorded in a ``manifest.json`` (or a folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read manifest {path}: {exc}") from None
    if not isinstance(info, dict) or info.get("format") != MANIFEST_FORMAT:
        raise ConfigError(f"{path} is not a shiftpool manifest (field 'format' is not "
                          f"{MANIFEST_FORMAT!r})")
    config = AcceleratorConfig.from_dict(info.get("config", {}))
    if config.hash != info.get("config_hash"):
        raise ConfigError(f"{path}: field 'config_hash' does not match its 'config'; "
                          f"regenerate the design")
    return config


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
    from .sim.runner import run_image

    inputs = golden.check_inputs(model, inputs)
    image = compile_model(model, config, bits=bits, mode=mode)
    expected = golden.run(model, inputs, bits=bits, mode=mode)
    bench = dict(simulator=simulator, build_dir=build_dir, seed=seed, idle_gap=idle_gap,
                 back_pressure=back_pressure, mode=bench_mode)
    run = run_image(image, inputs, progress=progress, **bench)
    result = SimResult(rtl=run.outputs, golden=expected, cycles=run.cycles,
                       predicted_cycles=inference_cycles(image), out_cycles=run.out_cycles,
                       run=run)
    first = result.first_difference()
    if waves is not None and first is not None:
        n, i = first
        again = run_image(image, inputs[n:n + 1], waves=Path(waves), **bench)
        result.waves, result.waves_cycle = again.waves, int(again.out_cycles[0, i])
        result.waves_ns = result.waves_cycle * again.clock_ns
    return result


def read_model(path: Path) -> QuantModel:
    """:func:`load_model` with a friendlier error for a missing file."""
    if not Path(path).exists():
        raise ModelError(f"model file {path} does not exist; make one with "
                         f"'shiftpool compress'")
    return load_model(path)
