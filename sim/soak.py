"""A soak of the host link under heavy faults: loads and runs through a damaging proxy.

The real driver talks to the simulated device (:func:`shiftpool.sim.serve.serve_sim`)
through a :class:`~shiftpool.sim.faults.FaultProxy` that flips, drops and inserts
bytes at ``rate`` per byte in both directions. The soak alternates whole model loads
(write and read-back verify) with batches of runs until the driver has answered
``requests`` requests, and checks, as it goes:

- every output equals the golden model's;
- no frame that was damaged on the line passed a CRC check, on either side (each
  frame the device accepted is one the host sent, each reply the host accepted is one
  the device sent);
- nothing hangs: an operation that makes no progress for ``hang_seconds`` is a
  failure.

:func:`soak` returns the counts (faults injected, requests, retries, NAKs by reason,
timeouts) as a :class:`SoakReport`; ``shiftpool bench --soak`` runs it at the issue's
size and the test suite at a smaller one.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np

from ..sw.host.driver import Device
from ..sw.host.frames import Frame, FrameDecoder
from ..sw.model.file import QuantModel
from ..sw.schemes import golden
from .faults import FaultProxy

__all__ = ["SoakError", "SoakReport", "soak"]

#: Runs between two loads.
RUNS_PER_LOAD = 40


class SoakError(RuntimeError):
    """The link let a damaged frame through, gave a wrong output, or hung."""


@dataclasses.dataclass
class SoakReport:
    seed: int
    rate: float
    loads: int
    runs: int
    requests: int
    retries: int
    naks: dict
    timeouts: int
    faults: dict
    frames_accepted_by_device: int
    replies_accepted_by_host: int
    seconds: float

    def summary(self) -> str:
        faults = sum(self.faults.values())
        naks = ", ".join(f"{k} {v}" for k, v in sorted(self.naks.items())) or "none"
        return (f"seed {self.seed}, fault rate {self.rate:g} per byte each way: {faults} "
                f"faults injected; {self.loads} loads and {self.runs} runs in "
                f"{self.requests} requests, {self.retries} retries, NAKs: {naks}, "
                f"{self.timeouts} timeouts; 0 damaged frames accepted "
                f"({self.frames_accepted_by_device} by the device, "
                f"{self.replies_accepted_by_host} by the host, all genuine); every output "
                f"equal to the golden model; {self.seconds:.1f} s")


def _frames(data: bytes, max_payload: int) -> list:
    return [e for e in FrameDecoder(max_payload).feed_bytes(bytes(data)) if isinstance(e, Frame)]


class _Watchdog:
    """Fails the soak when :meth:`kick` is not called for ``seconds``."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.last = time.monotonic()
        self.fired = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        while not self._stop.wait(0.2):
            if time.monotonic() - self.last > self.seconds:
                self.fired.set()
                return

    def kick(self):
        if self.fired.is_set():
            raise SoakError(f"no progress for {self.seconds} s: the link hung")
        self.last = time.monotonic()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def soak(model: QuantModel, x: np.ndarray, device_port: int, max_payload: int, *,
         requests: int, rate: float = 1e-2, seed: int = 1, timeout: float = 0.3,
         retries: int = 200, hang_seconds: float = 120.0, progress=None) -> SoakReport:
    """Soak the link of the simulated device on ``device_port`` (see the module
    docstring); ``x`` are integer inputs of ``model``, ``max_payload`` the device's
    (its :class:`~shiftpool.hw.link.config.LinkConfig`).

    ``retries`` is per request. A frame of ``n`` bytes passes a link with ``rate``
    faults per byte whole with probability ``(1 - rate)**n``: at 1e-2 a 256-byte RUN
    (the digits input since activation words: 64 words of 4 lanes, 3 of them padding)
    has about 7% per attempt, so 40 retries (enough for last session's 64-byte RUN)
    fail one request in 20; 200 fail one in 10**6.

    Raises
    ------
    SoakError
        On a wrong output, a damaged frame accepted, or a hang.
    """
    expected = golden.run(model, x)
    accepted = []
    loads = runs = 0
    t0 = time.monotonic()
    with _Watchdog(hang_seconds) as dog, FaultProxy(device_port, rate, seed) as proxy, \
            Device(proxy.url, timeout=timeout, retries=retries, progress=False) as dev:
        feed = dev._decoder.feed_bytes

        def spy(data):
            events = feed(data)
            accepted.extend(e for e in events if isinstance(e, Frame))
            dog.kick()
            return events

        dev._decoder.feed_bytes = spy
        start = 0
        while dev.stats.requests < requests:
            dev.load(model)
            loads += 1
            dog.kick()
            for _ in range(RUNS_PER_LOAD):
                if dev.stats.requests >= requests:
                    break
                i = start % len(x)
                start += 1
                outputs, _ = dev.run(x[i:i + 1])
                runs += 1
                dog.kick()
                if not np.array_equal(outputs, expected[i:i + 1]):
                    raise SoakError(f"seed {seed}: run {runs} (input {i}) differs from the "
                                    f"golden model")
            if progress:
                progress(f"soak: {dev.stats.requests} / {requests} requests, "
                         f"{dev.stats.retries} retries")
        stats = dev.stats
    limit = 0xFFFF
    sent = {(f.cmd, f.seq, f.payload) for f in _frames(proxy.received["to_device"], limit)}
    arrived = _frames(proxy.delivered["to_device"], max_payload)
    replies = {(f.cmd, f.seq, f.payload) for f in _frames(proxy.received["to_host"], limit)}
    # Frames the device decoded from the damaged stream that the host never sent would
    # have passed its CRC check; so would replies the host accepted that the device
    # never sent.
    forged = [f for f in arrived if (f.cmd, f.seq, f.payload) not in sent]
    forged_replies = [f for f in accepted if (f.cmd, f.seq, f.payload) not in replies]
    if forged or forged_replies:
        raise SoakError(f"seed {seed}: {len(forged)} damaged frames passed the device's CRC "
                        f"check and {len(forged_replies)} the host's")
    return SoakReport(seed=seed, rate=rate, loads=loads, runs=runs, requests=stats.requests,
                      retries=stats.retries, naks=dict(stats.naks), timeouts=stats.timeouts,
                      faults={f"{d} {k}": n for (d, k), n in proxy.counts.items()},
                      frames_accepted_by_device=len(arrived),
                      replies_accepted_by_host=len(accepted),
                      seconds=time.monotonic() - t0)
