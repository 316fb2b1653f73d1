"""A TCP proxy that damages the byte stream between a host and a device.

Put between the driver and the simulated device (or anything on a TCP port), it
forwards both directions and, for each byte, with probability ``rate`` flips one of
its bits, drops it, or inserts a random byte before it (a quarter of the inserted
bytes are the frame sync byte, so that false frame starts happen too). Each
direction has its own generator seeded from ``seed``, so a run's decisions depend
only on the bytes. It keeps what it received and what it delivered in each
direction, and counts the faults, so that a test can check what got through.
"""

from __future__ import annotations

import collections
import select
import socket
import threading

import numpy as np

from ..hw.link.protocol import SYNC

__all__ = ["FAULT_KINDS", "FaultProxy"]

#: What can happen to a byte.
FAULT_KINDS = ("flip", "drop", "insert")
#: The two directions: host to device, device to host.
DIRECTIONS = ("to_device", "to_host")


class FaultProxy:
    """Listens on ``127.0.0.1`` (a free port, :attr:`port`) and forwards one client at
    a time to ``127.0.0.1:upstream``, damaging bytes at ``rate``.

    Parameters
    ----------
    upstream : int
        The device's TCP port.
    rate : float
        Probability of a fault per byte, in each direction.
    seed : int
        Seeds the fault generators.
    kinds : tuple of str
        Which faults (:data:`FAULT_KINDS`).

    Members
    -------
    url : str
        ``socket://127.0.0.1:PORT`` for the driver.
    counts : Counter
        ``(direction, kind) -> faults injected``.
    received, delivered : dict of bytearray
        Per direction, the bytes that came in and the bytes that went out.
    """

    def __init__(self, upstream: int, rate: float, seed: int, kinds=FAULT_KINDS):
        if not 0 <= rate < 1:
            raise ValueError(f"rate {rate} must be in [0, 1)")
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        self.upstream = upstream
        self.rate = rate
        self.seed = seed
        self.kinds = tuple(kinds)
        self._rngs = {d: np.random.default_rng([seed, i]) for i, d in enumerate(DIRECTIONS)}
        self.counts = collections.Counter()
        self.received = {d: bytearray() for d in DIRECTIONS}
        self.delivered = {d: bytearray() for d in DIRECTIONS}
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"socket://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)
        self._thread.start()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def damage(self, direction: str, data: bytes) -> bytes:
        """``data`` after this direction's faults (and recorded)."""
        rng = self._rngs[direction]
        self.received[direction] += data
        out = bytearray()
        hits = rng.random(len(data)) < self.rate
        for byte, hit in zip(data, hits, strict=True):
            if not hit:
                out.append(byte)
                continue
            kind = self.kinds[int(rng.integers(len(self.kinds)))]
            self.counts[direction, kind] += 1
            if kind == "flip":
                out.append(byte ^ (1 << int(rng.integers(8))))
            elif kind == "insert":
                out.append(SYNC if rng.random() < 0.25 else int(rng.integers(256)))
                out.append(byte)
        self.delivered[direction] += out
        return bytes(out)

    def _serve(self) -> None:
        client = device = None
        try:
            while not self._stop.is_set():
                readers = [self._listener] + [s for s in (client, device) if s is not None]
                ready, _, _ = select.select(readers, [], [], 0.05)
                if self._listener in ready:
                    new, _ = self._listener.accept()
                    for s in (client, device):
                        if s is not None:
                            s.close()
                    client = new
                    device = socket.create_connection(("127.0.0.1", self.upstream))
                    for s in (client, device):
                        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    continue
                for src, dst, direction in ((client, device, "to_device"),
                                            (device, client, "to_host")):
                    if src is None or src not in ready:
                        continue
                    try:
                        data = src.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        client.close()
                        device.close()
                        client = device = None
                        break
                    dst.sendall(self.damage(direction, data))
        finally:
            for s in (client, device):
                if s is not None:
                    s.close()
