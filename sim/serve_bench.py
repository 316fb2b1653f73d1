"""cocotb bench of the simulated device: the UART pins of ``hw/device.py: Device``
bridged to a TCP port (or a pseudo-terminal).

Run through :mod:`shiftpool.sim.serve`, never directly: it passes a job file
(``SHIFTPOOL_SERVE_JOB``) with the bit time, where to listen and where to write the
"ready" note. Four small parts:

* :class:`UARTSource` shifts bytes into ``uart_rx`` (8N1, LSB first, ``divisor``
  clock cycles a bit, characters back to back while there are bytes).
* :class:`UARTSink` samples ``uart_tx`` in the middle of each bit and hands over the
  characters.
* :class:`Endpoint` is the host side: a listening TCP socket that takes one client
  at a time (a new client replaces the old one), or the master side of a pty. It is
  polled from the simulation with ``select``, so no thread shares the simulator.
* :class:`FrameMonitor` parses both directions with the reference frame decoder and
  writes one JSON line per frame with its first and last clock cycle (``--trace``).

When nothing happens on either line for a while, the bench blocks in ``select`` for
a few milliseconds per poll instead of simulating idle cycles at full speed, so an
idle simulated device costs little CPU. The bench ends when the process that started
the server is gone or after ``exit_idle`` seconds without a client.
"""

from __future__ import annotations

import json
import os
import select
import socket
import time

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, Event, FallingEdge, Timer

from ..sw.host.frames import Frame, FrameDecoder

__all__ = ["Endpoint", "FrameMonitor", "UARTSink", "UARTSource"]

#: Clock period of the simulated device, ns (the harness's: ``shiftpool.sim.runner.CLOCK_NS``).
CLOCK_NS = 10
#: Cycles between two polls of the host side.
POLL_CYCLES = 1024
#: Idle cycles (nothing on either line, nothing to send) before polls block.
IDLE_CYCLES = 500_000
#: How long one poll blocks once idle, s.
IDLE_WAIT = 0.02
#: Bytes kept for a host that does not read (older ones are dropped).
TX_LIMIT = 1 << 20


def _cycle() -> int:
    return int(get_sim_time("ns")) // CLOCK_NS


class UARTSource:
    """Drives ``line`` with the bytes given to :meth:`feed`, ``divisor`` cycles a bit.

    Bit changes happen only at falling clock edges (every wait is a whole number of
    clock periods from a falling edge), away from the edge the receiver samples on.
    """

    def __init__(self, line, divisor: int, monitor: FrameMonitor | None = None):
        self.line = line
        self.bit_ns = divisor * CLOCK_NS
        self.monitor = monitor
        self.pending = bytearray()
        self.busy = False
        self._wake = Event()

    def feed(self, data: bytes) -> None:
        self.pending += data
        self._wake.set()

    def flush(self) -> None:
        """Forget bytes not yet sent (the host went away)."""
        del self.pending[:]

    async def run(self):
        self.line.value = 1
        while True:
            if not self.pending:
                self.busy = False
                self._wake.clear()
                await self._wake.wait()
                continue
            self.busy = True
            byte = self.pending.pop(0)
            start = _cycle()
            # start bit, 8 data bits LSB first, stop bit; runs of equal bits in one wait
            bits = [0] + [(byte >> i) & 1 for i in range(8)] + [1]
            i = 0
            while i < len(bits):
                j = i
                while j < len(bits) and bits[j] == bits[i]:
                    j += 1
                self.line.value = bits[i]
                await Timer((j - i) * self.bit_ns, unit="ns")
                i = j
            if self.monitor is not None:
                self.monitor.byte("rx", byte, start, _cycle())


class UARTSink:
    """Samples ``line`` in the middle of each bit; ``on_byte(byte)`` per character.

    A low start bit that is high again at its middle is a glitch and ignored; a
    character whose stop bit is low is dropped (as the device's receiver does)."""

    def __init__(self, line, divisor: int, on_byte, monitor: FrameMonitor | None = None):
        self.line = line
        self.bit_ns = divisor * CLOCK_NS
        self.on_byte = on_byte
        self.monitor = monitor
        self.busy = False

    async def run(self):
        # Half a bit plus half a clock: the middle of the bit, on a falling clock edge.
        half = self.bit_ns // 2 + CLOCK_NS // 2
        while True:
            self.busy = False
            await FallingEdge(self.line)
            self.busy = True
            start = _cycle()
            await Timer(half, unit="ns")
            if int(self.line.value):
                continue
            byte = 0
            for i in range(8):
                await Timer(self.bit_ns, unit="ns")
                byte |= int(self.line.value) << i
            await Timer(self.bit_ns, unit="ns")
            if not int(self.line.value):
                continue
            self.on_byte(byte)
            if self.monitor is not None:
                self.monitor.byte("tx", byte, start, _cycle())


class FrameMonitor:
    """Writes one JSON line per frame seen on either line to ``path``: direction
    (``rx`` host to device, ``tx`` device to host), command, sequence byte, payload
    length, ``ok`` (CRC good) or the drop reason, first and last cycle."""

    def __init__(self, path: str, max_payload: int = 0xFFFF):
        self._file = open(path, "w", buffering=1)   # closed by close()
        self._decoders = {"rx": FrameDecoder(max_payload), "tx": FrameDecoder(max_payload)}
        self._starts = {"rx": 0, "tx": 0}

    def byte(self, direction: str, byte: int, start: int, end: int) -> None:
        decoder = self._decoders[direction]
        if not decoder.in_frame:
            self._starts[direction] = start
        for event in decoder.feed(byte):
            record = {"dir": direction, "cmd": event.cmd, "seq": event.seq,
                      "start": self._starts[direction], "end": end}
            if isinstance(event, Frame):
                record.update(length=len(event.payload), ok=True)
            else:
                record.update(length=event.length, ok=False, reason=event.reason.name)
            self._file.write(json.dumps(record) + "\n")
            self._starts[direction] = end

    def close(self) -> None:
        self._file.close()

    def reset(self) -> None:
        """A new host: partial frames are forgotten."""
        for direction, decoder in self._decoders.items():
            decoder.expire()
            self._starts[direction] = 0


class Endpoint:
    """The host side of the bridge: a TCP server on ``127.0.0.1:port`` (one client at a
    time) or, with ``pty``, the master of a new pseudo-terminal."""

    def __init__(self, port: int = 0, pty: bool = False):
        self._listener = self._client = self._master = self._slave = None
        self.port = None
        self.tty = None
        if pty:
            import tty

            self._master, self._slave = os.openpty()
            tty.setraw(self._slave)
            os.set_blocking(self._master, False)
            self.tty = os.ttyname(self._slave)
        else:
            self._listener = socket.create_server(("127.0.0.1", port))
            self._listener.setblocking(False)
            self.port = self._listener.getsockname()[1]
        self._out = bytearray()
        self.idle_since = time.monotonic()
        #: Set when a client came or went; the bench clears it.
        self.changed = False

    @property
    def has_client(self) -> bool:
        return self._master is not None or self._client is not None

    @property
    def tx_pending(self) -> bool:
        return bool(self._out)

    def send(self, byte: int) -> None:
        if self.has_client:
            self._out.append(byte)
            if len(self._out) > TX_LIMIT:
                del self._out[:-TX_LIMIT]

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self._out.clear()
        self.idle_since = time.monotonic()
        self.changed = True

    def poll(self, wait: float) -> bytes:
        """Accept a client, send what is pending, return what the host sent; blocks up
        to ``wait`` seconds when nothing is ready."""
        conn = self._master if self._master is not None else self._client
        readers = [r for r in (self._listener, conn) if r is not None]
        writers = [conn] if (conn is not None and self._out) else []
        readable, writable, _ = select.select(readers, writers, [], wait)
        data = b""
        if self._listener is not None and self._listener in readable:
            try:
                client, _ = self._listener.accept()
            except OSError:
                client = None
            if client is not None:
                self._drop_client()
                client.setblocking(False)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._client = conn = client
                self.changed = True
                return b""
        if conn is not None and conn in writable:
            try:
                sent = (os.write(conn, self._out) if conn is self._master
                        else conn.send(self._out))
                del self._out[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._drop_client()
                return b""
        if conn is not None and conn in readable:
            try:
                data = (os.read(conn, 65536) if conn is self._master else conn.recv(65536))
            except (BlockingIOError, InterruptedError):
                data = b""
            except OSError:
                data = None
            if not data and conn is self._client:
                # b"" (or an error) on a readable socket: the client went away
                self._drop_client()
                return b""
        return data or b""

    def close(self) -> None:
        for s in (self._client, self._listener):
            if s is not None:
                s.close()
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_ready(path: str, note: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(note, f)
    os.replace(tmp, path)


@cocotb.test()
async def serve(dut):
    """Bridge the device's UART to the job's endpoint until told to stop."""
    with open(os.environ["SHIFTPOOL_SERVE_JOB"]) as f:
        job = json.load(f)
    divisor = job["divisor"]
    parent = job.get("parent_pid")
    exit_idle = job.get("exit_idle") or 0

    if job.get("clock", "gpi") == "gpi":
        # A build without the harness (whose clock toggles in the simulator itself).
        Clock(dut.clk, CLOCK_NS, unit="ns", impl="gpi").start(start_high=False)
    dut.uart_rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    await FallingEdge(dut.clk)
    dut.rst.value = 0

    monitor = FrameMonitor(job["trace"]) if job.get("trace") else None
    endpoint = Endpoint(job.get("port", 0), pty=job.get("pty", False))
    source = UARTSource(dut.uart_rx, divisor, monitor)
    sink = UARTSink(dut.uart_tx, divisor, endpoint.send, monitor)
    cocotb.start_soon(source.run())
    cocotb.start_soon(sink.run())
    _write_ready(job["ready"], {"port": endpoint.port, "tty": endpoint.tty,
                                "pid": os.getpid(), "divisor": divisor})
    idle = 0
    try:
        while True:
            await Timer(POLL_CYCLES * CLOCK_NS, unit="ns")
            busy = source.busy or sink.busy or endpoint.tx_pending
            idle = 0 if busy else idle + POLL_CYCLES
            data = endpoint.poll(IDLE_WAIT if idle >= IDLE_CYCLES else 0)
            if endpoint.changed:
                endpoint.changed = False
                source.flush()
                if monitor is not None:
                    monitor.reset()
            if data:
                source.feed(data)
                idle = 0
            if parent is not None and not _alive(parent):
                dut._log.info("process %s is gone; stopping", parent)
                break
            if (exit_idle and not endpoint.has_client
                    and time.monotonic() - endpoint.idle_since > exit_idle):
                dut._log.info("no client for %s s; stopping", exit_idle)
                break
    finally:
        endpoint.close()
        if monitor is not None:
            monitor.close()
