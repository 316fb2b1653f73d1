"""The command line of the host link: ``shiftpool serve-sim`` (a simulated device) and
``shiftpool run`` (the driver). :mod:`shiftpool.cli` adds them to its parser with
:func:`add_serve_sim_parser` and :func:`add_run_parser`.

Errors end in one ``error: ...`` line and exit code 2; ``run --check`` exits with 1
when the device's outputs differ from the golden model's.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from .hw.config import DEFAULT_LANES, DEFAULT_TAPS

__all__ = ["add_run_parser", "add_serve_sim_parser", "cmd_run", "cmd_serve_sim"]

#: Outputs printed in full up to this many inputs (then a summary).
PRINT_LIMIT = 10


def _say(text: str = "") -> None:
    print(text, flush=True)


def _step(text: str) -> None:
    print(f"[shiftpool] {text}", file=sys.stderr, flush=True)


def _fail(exc: Exception, hint: str = "") -> int:
    if os.environ.get("SHIFTPOOL_DEBUG"):
        raise exc
    print(f"error: {exc}{'; ' + hint if hint else ''}", file=sys.stderr)
    return 2


# -- serve-sim ----------------------------------------------------------------------------

def add_serve_sim_parser(sub) -> argparse.ArgumentParser:
    """The ``serve-sim`` subcommand."""
    from .sim.runner import SIMULATORS

    p = sub.add_parser("serve-sim", help="run the generated accelerator with its UART in a "
                       "cocotb simulation, its serial line on a local TCP port (or a pty) for "
                       "'shiftpool run'")
    p.add_argument("design", type=Path, help="model file (.npz; the device is fitted to it "
                   "with --lanes/--taps) or a generated design (folder or manifest.json)")
    p.add_argument("--port", type=int, default=7777,
                   help="TCP port on 127.0.0.1 (default 7777; 0 picks a free one)")
    p.add_argument("--pty", action="store_true",
                   help="serve on a new pseudo-terminal instead of TCP; its path is printed")
    p.add_argument("--lanes", type=int, default=DEFAULT_LANES, help="output channels in "
                   f"parallel (default {DEFAULT_LANES}; model files only)")
    p.add_argument("--taps", type=int, default=DEFAULT_TAPS, help="inputs per lane per cycle "
                   f"(default {DEFAULT_TAPS}; model files only)")
    p.add_argument("--simulator", choices=SIMULATORS, default="verilator",
                   help="RTL simulator (default verilator; icarus is much slower)")
    p.add_argument("--build-dir", type=Path, default=None,
                   help="where simulator builds are cached (default: a temp folder)")
    p.add_argument("--exit-idle", type=float, default=0.0, metavar="SECONDS",
                   help="stop after this many seconds without a client (default: run until "
                        "Ctrl-C)")
    p.set_defaults(func=cmd_serve_sim)
    return p


def cmd_serve_sim(args) -> int:
    from .hw.config import ConfigError
    from .sim.runner import SimulatorError
    from .sim.serve import serve_sim
    from .sw.model.file import ModelError

    if not args.design.exists():
        return _fail(FileNotFoundError(f"{args.design} does not exist"),
                     "give a model file from 'shiftpool compress' or a folder from "
                     "'shiftpool generate'")
    # Ctrl-C, a kill or a closed terminal all end in the same clean stop (also when
    # the shell started us with SIGINT ignored, as it does for background jobs).
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    handlers = {sig: signal.signal(sig, interrupt)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        with serve_sim(args.design, args.port, lanes=args.lanes, taps=args.taps,
                       simulator=args.simulator, build_dir=args.build_dir, pty=args.pty,
                       exit_idle=args.exit_idle, progress=_step) as server:
            _say(f"simulated device ready on {server.url} (config {server.config.hash}, "
                 f"{server.config.engine}, {server.config.lanes} lanes x "
                 f"{server.config.taps} taps, UART {server.link.divisor} clocks per bit; "
                 f"{args.simulator} in process group {server.process.pid}, log {server.log})")
            _say(f"  e.g.: shiftpool run MODEL --port {server.url} --inputs X.npy --check")
            _say("  Ctrl-C stops it")
            code = server.wait()
            if code:
                _step(f"the simulator ended with exit code {code}; log: {server.log}")
                return 1
            _step("the simulated device stopped")
            return 0
    except KeyboardInterrupt:
        _step("stopped")
        return 0
    except (SimulatorError, ConfigError, ModelError, OSError) as exc:
        return _fail(exc)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


# -- run --------------------------------------------------------------------------------

def add_run_parser(sub) -> argparse.ArgumentParser:
    """The ``run`` subcommand."""
    p = sub.add_parser("run", help="load a model into a device (a board, or 'shiftpool "
                       "serve-sim') and run inputs on it")
    p.add_argument("model", type=Path, help="model file (.npz)")
    p.add_argument("--port", required=True, help="serial port or pyserial URL: /dev/ttyUSB1, "
                   "socket://127.0.0.1:7777, a pty path, ...")
    p.add_argument("--inputs", type=Path, required=True,
                   help=".npy of shape (N, C, H, W): integers, or floats with --quantize")
    p.add_argument("--quantize", action="store_true",
                   help="quantize float inputs with the model's input scale")
    p.add_argument("--outputs", type=Path, help="write the device's outputs here (.npy)")
    p.add_argument("--check", action="store_true", help="compare the outputs with the golden "
                   "model and the cycles with the cycle model; exit 1 on a difference")
    p.add_argument("--design", type=Path, help="the device's generated design (folder or "
                   "manifest.json), when it is not the configuration fitted to the model")
    p.add_argument("--baud", type=int, default=115_200, help="UART baud rate (default 115200)")
    p.add_argument("--timeout", type=float, default=1.0,
                   help="seconds a reply may take beyond its time on the line (default 1)")
    p.add_argument("--retries", type=int, default=8,
                   help="resends of one request before giving up (default 8)")
    p.add_argument("--no-verify", action="store_true",
                   help="do not read the written regions back")
    p.add_argument("--bits", type=int, default=None,
                   help="pool models: activation bit-planes each pool layer processes "
                   "(1..act_bits; default all); it lives in the program region only")
    p.add_argument("--keep-weights", action="store_true",
                   help="the device already holds this model (loaded by an earlier run): "
                   "write only the program region (with --bits: switch the precision "
                   "without reloading weights) and say how long it took")
    p.set_defaults(func=cmd_run)
    return p


def cmd_run(args) -> int:
    import serial

    from .cli import UsageError, _load_inputs
    from .hw.config import ConfigError
    from .sw.compile.manifest import load_manifest
    from .sw.host.driver import Device, DriverError
    from .sw.model.file import ModelError, read_model

    try:
        model = read_model(args.model)
        x = _load_inputs(args.inputs, model, args.quantize)
        config = load_manifest(args.design) if args.design else None
        with Device(args.port, baudrate=args.baud, timeout=args.timeout,
                    retries=args.retries) as dev:
            ident = dev.identify()
            _say(f"device on {args.port}: protocol {ident.version}, config {ident.config_hash},"
                 f" {ident.engine}, {ident.lanes} lanes x {ident.taps} taps")
            if args.bits is not None and model.scheme != "pool":
                raise UsageError(f"--bits: {args.model} is a {model.scheme} model; only pool "
                                 f"models have a run-time precision (drop --bits)")
            if args.keep_weights:
                dev.adopt(model, config=config)
                what = "all" if args.bits is None else f"{args.bits}"
                _step(f"switching {args.model} to {what} activation bit-planes: program "
                      f"region only")
                switch = dev.set_bits(args.bits, verify=not args.no_verify)
                verified = "verified by read-back" if switch.verified else "not verified"
                _say(f"precision switch: {switch.rows['program']} program rows, "
                     f"{switch.bytes_sent} bytes sent in {switch.seconds:.3f} s ({verified});"
                     f" no other region written")
            else:
                _step(f"loading {args.model} ({model.scheme})")
                report = dev.load(model, config=config, verify=not args.no_verify,
                                  bits=args.bits)
                verified = "verified by read-back" if report.verified else "not verified"
                _say(f"loaded {report.row_bytes} bytes of rows in {report.frames} frames "
                     f"({report.line_bytes} bytes on the line) in {report.write_seconds:.2f}"
                     f" s, {verified} in {report.verify_seconds:.2f} s")
            _step(f"running {len(x)} inputs")
            t0 = time.monotonic()
            outputs, cycles = dev.run(x)
            wall = time.monotonic() - t0
            stats, image = dev.stats, dev.image
    except (DriverError, serial.SerialException) as exc:
        return _fail(exc)
    except (UsageError, ConfigError, ModelError, FileNotFoundError, ValueError) as exc:
        return _fail(exc)
    if args.outputs:
        from .cli import _save_npy

        _save_npy(args.outputs, outputs)
    _say(f"ran {len(x)} inputs in {wall:.2f} s; cycles per inference: "
         f"{_cycles_text(cycles)}")
    if len(x) <= PRINT_LIMIT:
        for n, row in enumerate(outputs):
            _say(f"  input {n}: class {int(row.argmax())}, outputs {row.tolist()}")
    else:
        _say(f"  classes of the first {PRINT_LIMIT}: {outputs[:PRINT_LIMIT].argmax(1).tolist()}"
             + (f" (all outputs in {args.outputs})" if args.outputs else
                " (--outputs FILE.npy saves them all)"))
    _say(f"link: {stats.summary()}")
    if args.check:
        return _check(model, x, outputs, cycles, image, args.bits)
    return 0


def _cycles_text(cycles: np.ndarray) -> str:
    lo, hi = int(cycles.min()), int(cycles.max())
    return str(lo) if lo == hi else f"{lo}..{hi}"


def _check(model, x, outputs, cycles, image, bits=None) -> int:
    from .sw.compile.cycles import inference_cycles
    from .sw.schemes import golden

    expected = golden.run(model, x, bits=bits)
    equal = (outputs == expected).all(axis=1)
    _say(f"device == golden: {int(equal.sum())} / {len(x)} inputs")
    predicted = inference_cycles(image)
    _say(f"cycles: {_cycles_text(cycles)} measured, {predicted} predicted by the cycle model")
    if not equal.all():
        n = int(np.flatnonzero(~equal)[0])
        i = int(np.flatnonzero(outputs[n] != expected[n])[0])
        _say(f"mismatch: input {n}, output {i}: device {outputs[n, i]} != golden "
             f"{expected[n, i]}")
        return 1
    if (cycles != predicted).any():
        _say("mismatch: the device's cycle counts differ from the cycle model")
        return 1
    return 0
