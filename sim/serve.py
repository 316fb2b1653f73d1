"""The simulated device: the UART-linked accelerator (``hw/device.py``) in cocotb,
its serial line bridged to a TCP port on 127.0.0.1 (or a pseudo-terminal), so that
the host driver (:mod:`shiftpool.sw.host.driver`) talks to it exactly as to a board.

:func:`serve_sim` is the way in, from Python and from ``shiftpool serve-sim``: it
builds the simulation (cached), starts the simulator in a subprocess of its own
process group, waits until the port accepts connections, and on exit (Ctrl-C
included) kills the whole group. The simulator also stops by itself when the process
that started it is gone. The bench is :mod:`shiftpool.sim.serve_bench`.

The simulated UART runs at :data:`SIM_LINK`'s short divisor (4 clock cycles per bit)
so that streaming is quick; IDENTIFY reports it, and the driver needs nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..hw.config import DEFAULT_LANES, DEFAULT_TAPS, AcceleratorConfig, ConfigError
from ..hw.link.config import LinkConfig
from .runner import SimulatorError, build_design, toplevel_of

__all__ = ["DEVICE_TOPLEVEL", "SIM_LINK", "SimServer", "build_device", "device_config",
           "serve_sim"]

#: Top module of the simulated device.
DEVICE_TOPLEVEL = "shiftpool_device"
#: Link of the simulated device: 4 cycles per bit (the least the receiver takes); a
#: receive FIFO deep enough for two WRITEs in flight (128 characters are 5120 cycles,
#: the handler needs about 2048 for a full frame); a partial frame is dropped after
#: 20000 idle cycles (500 characters).
SIM_LINK = LinkConfig(divisor=4, max_payload=1024, byte_timeout=20_000, run_timeout=1 << 24,
                      rx_fifo_depth=128)
#: How the device's simulation is built (``shiftpool.sim.runner.build_design``): in
#: the harness, whose clock toggles in the simulator, not through VPI.
DEVICE_RECIPE = "harness"
#: Seconds a started simulator may take to open its port.
START_TIMEOUT = 120.0


def device_config(source, lanes: int = DEFAULT_LANES, taps: int = DEFAULT_TAPS
                  ) -> AcceleratorConfig:
    """The configuration to simulate for ``source``: an :class:`AcceleratorConfig`, a
    :class:`~shiftpool.sw.model.file.QuantModel` or a model file (fitted with ``lanes`` x
    ``taps``, as :func:`shiftpool.sim.flow.fit_config` does), or a generated design (its
    folder or its ``manifest.json``).

    Raises
    ------
    ConfigError
        If the model does not fit or the manifest is unreadable.
    """
    from ..sw.compile.fit import fit_config
    from ..sw.compile.manifest import load_manifest
    from ..sw.model.file import QuantModel, read_model

    if isinstance(source, AcceleratorConfig):
        return source
    if isinstance(source, QuantModel):
        return fit_config(source, lanes=lanes, taps=taps)
    path = Path(source)
    if path.is_dir() or path.suffix == ".json":
        return load_manifest(path)
    return fit_config(read_model(path), lanes=lanes, taps=taps)


def _design_key(config: AcceleratorConfig, link: LinkConfig) -> str:
    import hashlib

    text = json.dumps({"config": config.as_dict(), "link": link.as_dict()}, sort_keys=True)
    return "device-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def default_build_dir() -> Path:
    return Path(tempfile.gettempdir()) / "shiftpool-sim"


def build_device(config: AcceleratorConfig, link: LinkConfig = SIM_LINK,
                 simulator: str = "verilator", build_dir: Path | None = None) -> Path:
    """Build (or reuse, if its Verilog is unchanged) the simulation of the device for
    ``config`` and ``link``; returns the build folder."""
    from ..hw.device import Device

    return build_design(lambda: Device(config, link), _design_key(config, link),
                        DEVICE_TOPLEVEL, simulator, build_dir or default_build_dir(),
                        check_source=True, recipe=DEVICE_RECIPE)


@dataclasses.dataclass
class SimServer:
    """A running simulated device (what :func:`serve_sim` yields).

    Members
    -------
    url : str
        What to give the driver: ``socket://127.0.0.1:PORT`` or the pty's path.
    port : int or None
    tty : str or None
    config, link
        The accelerator and link configurations it simulates.
    trace : Path or None
        JSON lines, one per frame on the line, with clock cycles (if asked for).
    log : Path
        The simulator's log.
    """

    url: str
    port: int | None
    tty: str | None
    config: AcceleratorConfig
    link: LinkConfig
    trace: Path | None
    log: Path
    process: subprocess.Popen

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait(self) -> int:
        """Block until the simulator ends; its exit code."""
        return self.process.wait()


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:] if line.strip())


def _stop(process: subprocess.Popen) -> None:
    """Terminate the server's process group (the server and the simulator it runs);
    kill what lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break                       # nothing of the group is left
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)      # stragglers of the group
        break
    if process.poll() is None:
        process.wait()


def _check_port_free(port: int) -> None:
    import socket

    try:
        with socket.create_server(("127.0.0.1", port)):
            pass
    except OSError as exc:
        raise SimulatorError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); pick "
                             f"another port (--port, 0 picks a free one)") from None


@contextlib.contextmanager
def serve_sim(source, port: int = 0, *, lanes: int = DEFAULT_LANES, taps: int = DEFAULT_TAPS,
              link: LinkConfig = SIM_LINK, simulator: str = "verilator",
              build_dir: Path | None = None, pty: bool = False, trace: bool = False,
              exit_idle: float = 0.0, start_timeout: float = START_TIMEOUT,
              progress=None) -> Iterator[SimServer]:
    """Run the simulated device for ``source`` (see :func:`device_config`) while the
    ``with`` block runs.

    Parameters
    ----------
    port : int
        TCP port on 127.0.0.1; 0 picks a free one (``SimServer.port`` says which).
    link : LinkConfig
        The simulated link (:data:`SIM_LINK`).
    simulator : str
        ``"verilator"`` or ``"icarus"`` (much slower).
    pty : bool
        Serve on a new pseudo-terminal instead of TCP (``SimServer.tty``).
    trace : bool
        Record every frame with its clock cycles (``SimServer.trace``).
    exit_idle : float
        Stop after this many seconds without a client (0: never).
    progress : callable, optional
        Called with a line of text for each step (building, starting).

    Raises
    ------
    SimulatorError
        If the build fails, or the simulator dies or does not open its port within
        ``start_timeout`` seconds.
    """
    config = device_config(source, lanes, taps)
    if not pty and port:
        _check_port_free(port)
    say = progress or (lambda text: None)
    say(f"building the {simulator} simulation of the device (config {config.hash}; "
        f"cached after the first time)")
    where = build_device(config, link, simulator, build_dir)
    tmp = Path(tempfile.mkdtemp(prefix="shiftpool-serve-"))
    job = {
        "config": config.as_dict(), "link": link.as_dict(), "simulator": simulator,
        "build_dir": str(where), "port": port, "pty": pty, "exit_idle": exit_idle,
        "parent_pid": os.getpid(), "ready": str(tmp / "ready.json"),
        "trace": str(tmp / "trace.jsonl") if trace else None,
        "log": str(tmp / "sim.log"), "divisor": link.divisor,
        "clock": "hdl" if DEVICE_RECIPE == "harness" else "gpi",
    }
    job_path = tmp / "job.json"
    job_path.write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    out = open(tmp / "server.log", "w")     # closed in the finally below
    process = subprocess.Popen([sys.executable, "-m", "shiftpool.sim.serve", str(job_path)],
                               stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                               env=env, start_new_session=True)
    try:
        say(f"starting the simulator (log: {job['log']})")
        deadline = time.monotonic() + start_timeout
        ready = Path(job["ready"])
        while not ready.exists():
            if process.poll() is not None:
                raise SimulatorError(f"the simulated device stopped at start (exit code "
                                     f"{process.returncode}): {_tail(Path(job['log']))} "
                                     f"{_tail(tmp / 'server.log')}")
            if time.monotonic() > deadline:
                raise SimulatorError(f"the simulated device did not open its port within "
                                     f"{start_timeout:.0f} s; log: {job['log']}")
            time.sleep(0.05)
        note = json.loads(ready.read_text())
        url = note["tty"] if pty else f"socket://127.0.0.1:{note['port']}"
        yield SimServer(url=url, port=note["port"], tty=note["tty"], config=config, link=link,
                        trace=Path(job["trace"]) if trace else None, log=Path(job["log"]),
                        process=process)
    finally:
        _stop(process)
        out.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _run_job(job: dict) -> int:
    """Run the bench of a job file (in the server subprocess); blocks until it ends."""
    from cocotb_tools.runner import get_runner

    from .runner import _check_simulator

    _check_simulator(job["simulator"])
    runner = get_runner(job["simulator"])
    test_dir = Path(job["log"]).parent
    job_path = test_dir / "job.json"
    try:
        runner.test(test_module="shiftpool.sim.serve_bench",
                    hdl_toplevel=toplevel_of(DEVICE_RECIPE, DEVICE_TOPLEVEL),
                    hdl_toplevel_lang="verilog", build_dir=job["build_dir"], test_dir=test_dir,
                    extra_env={"SHIFTPOOL_SERVE_JOB": str(job_path)}, log_file=job["log"],
                    results_xml=str(test_dir / "results.xml"))
    except (RuntimeError, SystemExit) as exc:
        print(f"simulation ended with an error ({exc}); log: {job['log']}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry of the server subprocess: ``python -m shiftpool.sim.serve JOB.json``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m shiftpool.sim.serve JOB.json (started by serve_sim)",
              file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())
    try:
        return _run_job(job)
    except KeyboardInterrupt:
        return 130
    except (SimulatorError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
