"""The host driver (``shiftpool.sw.host.driver``).

Unit tests run it over ``loop://`` against :class:`FakeDevice`, a pure-Python device
that answers frames and can be told to misbehave (NAK, stay silent, damage or
duplicate replies, send garbage, refuse): they test the driver's retry, timeout and
error logic. The rest runs the real thing: the device top (UART, framing, command
handler, accelerator) in Verilator behind ``serve_sim``, loaded and run over TCP
with the demo model, through a proxy that damages bytes, from the command line
(``serve-sim`` and ``run``), over a pty, and on Icarus.
"""

from __future__ import annotations

import collections
import dataclasses
import faulthandler
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from serial.urlhandler import protocol_loop
from shiftpool.hw.config import AcceleratorConfig
from shiftpool.hw.link import LinkConfig
from shiftpool.hw.link.protocol import (
    ARGS_BYTES,
    REPLY,
    STATUS_COUNTERS,
    Command,
    Reason,
    identify_payload,
    nak_payload,
    parse_rows,
    row_bytes,
)
from shiftpool.hw.program import REGIONS
from shiftpool.sim.faults import FaultProxy
from shiftpool.sim.kit import seeds
from shiftpool.sw.compile.cycles import inference_cycles
from shiftpool.sw.compile.fit import fit_config
from shiftpool.sw.compile.image import compile_model, region_depths, region_widths
from shiftpool.sw.host.driver import (
    ConfigMismatchError,
    Device,
    DeviceError,
    LinkError,
    VerifyError,
)
from shiftpool.sw.host.frames import Frame, FrameDecoder, FrameError, encode_frame
from shiftpool.sw.model.file import save_model
from shiftpool.sw.model.randmodel import random_model
from shiftpool.sw.schemes import golden

#: The fake's link: small frames, so that a region takes several of them.
FAKE_LINK = LinkConfig(divisor=8, max_payload=128, byte_timeout=800)
#: Reply timeout of the unit tests, s.
FAST = 0.05


def small_image(lanes: int = 2, taps: int = 4, convs=(6,)):
    rng = np.random.default_rng(5)
    model = random_model(rng, scheme="flightnn", input_shape=(2, 5, 5), convs=convs, pool=True,
                         dense=(5,))
    # Its im2col input (500 values at 4 taps) is longer than the fake link's 128-byte
    # RUN frame, so the driver loads the plain input's images (100 values): these.
    return compile_model(model, fit_config(model, lanes=lanes, taps=taps), im2col=False)


class FakeDevice(protocol_loop.Serial):
    """A device on ``loop://`` made of Python: frames the driver writes are decoded and
    answered (the answer goes into the queue the driver reads).

    It holds the four regions; RUN answers the golden model's outputs (and the cycle
    model's cycles) of ``image`` if the regions hold ``image``, zeros otherwise.
    ``script`` says what to do with the next request frames, one action each
    (default ``"ok"``): ``("nak", reason)``, ``"drop"`` (no reply), ``"corrupt"``
    (a reply with a damaged byte), ``"malformed"`` (a reply of the wrong length, CRC
    right), ``"stale"`` (first a late reply to the previous sequence byte),
    ``"garbage"`` (first random bytes and a NAK of them), ``"mute"`` (never answer
    again). ``bad_bit``: a bit of every weights row that reads back flipped
    (``flaky``: only for the first write of a row).
    """

    def __init__(self, image, link: LinkConfig = FAKE_LINK, config=None, script=()):
        super().__init__()
        self.buffer_size = 1 << 20
        self.port = "loop://"
        self.open()
        self.image = image
        self.config = config or image.config
        self.link = link
        self.decoder = FrameDecoder(link.max_payload)
        self.rows = {name: [0] * depth for name, depth in region_depths(self.config).items()}
        self.widths = region_widths(self.config)
        self.script = collections.deque(script)
        self.requests: list[Frame] = []
        self.muted = False
        self.bad_bit = None
        self.flaky = False
        self.bits = None        # the precision RUN computes at (a pool image's)
        self._written = set()

    def write(self, data):
        for event in self.decoder.feed_bytes(bytes(data)):
            if isinstance(event, FrameError):
                self._put(Command.NAK, event.seq, nak_payload(event.reason, event.cmd))
                continue
            self.requests.append(event)
            action = self.script.popleft() if self.script else "ok"
            self._act(action, event)
        return len(data)

    def _put(self, cmd, seq, payload=b"", damage=False):
        frame = bytearray(encode_frame(int(cmd), seq, payload))
        if damage:
            frame[-3] ^= 0x10
        if not self.muted:
            protocol_loop.Serial.write(self, bytes(frame))

    def _act(self, action, frame: Frame):
        if action == "mute":
            self.muted = True
        if self.muted or action == "drop":
            return
        if isinstance(action, tuple):
            self._put(Command.NAK, frame.seq, nak_payload(action[1], frame.cmd))
            return
        if action == "garbage":
            protocol_loop.Serial.write(self, bytes([0x13, 0xA5, 0x00]) + os.urandom(5))
            self._put(Command.NAK, 0x77, nak_payload(Reason.BAD_CRC, 0x00))
        reason, payload = self._execute(frame)
        if reason is not None:
            self._put(Command.NAK, frame.seq, nak_payload(reason, frame.cmd))
            return
        if action == "stale":
            self._put(frame.cmd | REPLY, (frame.seq - 1) & 0xFF, payload)
        if action == "malformed":
            payload += b"\x00"
        self._put(frame.cmd | REPLY, frame.seq, payload, damage=action == "corrupt")

    def _execute(self, frame: Frame):
        cmd, p = frame.cmd, frame.payload
        if cmd == Command.IDENTIFY:
            return None, identify_payload(self.config, self.link)
        if cmd == Command.STATUS:
            cb = row_bytes(self.config.cycle_bits)
            return None, bytes(1 + cb + 2 * len(STATUS_COUNTERS))
        if cmd == Command.RESET:
            return None, b""
        if cmd in (Command.WRITE, Command.READ):
            region, start, count = p[0], int.from_bytes(p[1:5], "little"), \
                int.from_bytes(p[5:7], "little")
            if region >= len(REGIONS):
                return Reason.BAD_REGION, b""
            name = REGIONS[region]
            if start + count > len(self.rows[name]):
                return Reason.REGION_OVERFLOW, b""
            nb = row_bytes(self.widths[name])
            if cmd == Command.READ:
                return None, b"".join(self.rows[name][start + i].to_bytes(nb, "little")
                                      for i in range(count))
            for i, row in enumerate(parse_rows(p[ARGS_BYTES:], self.widths[name])):
                addr = start + i
                if name == "weights" and self.bad_bit is not None and not (
                        self.flaky and (name, addr) in self._written):
                    row ^= 1 << self.bad_bit
                self._written.add((name, addr))
                self.rows[name][addr] = row
            return None, b""
        if cmd == Command.RUN:
            image = self.image
            x = input_from_words(image, np.frombuffer(p, dtype=np.uint8).astype(np.int64))
            loaded = all(self.rows[n][:len(image.regions[n])] == image.regions[n]
                         for n in REGIONS)
            outs = (golden.run(image.model, x, bits=self.bits)[0] if loaded
                    else np.zeros(image.model.classes))
            ob = row_bytes(self.config.acc_width)
            return None, (inference_cycles(image).to_bytes(row_bytes(self.config.cycle_bits),
                                                           "little")
                          + b"".join(int(v).to_bytes(ob, "little", signed=True) for v in outs))
        return Reason.UNKNOWN_COMMAND, b""


def input_from_words(image, values: np.ndarray) -> np.ndarray:
    """The ``(1, C, H, W)`` input in the values a RUN carries: the input map's words,
    its first ``in_lanes`` lanes (docs/model-format.md §2.2: flat, grouped, or im2col, whose centre
    taps ``c*9 + 4`` are the input channels; the driver picks im2col or not, the
    number of values tells which)."""
    c, h, w = image.model.input_shape
    taps = image.config.taps
    if image.model.layers[0].kind == "dense":
        return values[:c * h * w].reshape(1, c, h, w)
    def words(channels):  # ceil(channels / taps) words per position, in_lanes lanes each
        return -(-channels // taps) * h * w * min(channels, taps)
    im2col = len(values) == words(9 * c)
    lanes = min(9 * c if im2col else c, taps)
    chans = values.reshape(-1, h * w, lanes).transpose(0, 2, 1).reshape(-1, h * w)
    return (chans[4::9][:c] if im2col else chans[:c]).reshape(1, c, h, w)


def test_the_driver_takes_im2col_where_asked_and_the_run_frame_holds_it():
    """Both images fit the fitted configuration; by default the driver loads the plain
    one (fewer link bytes); with ``im2col=True`` the im2col one when its input fits one
    RUN frame, the plain one otherwise; both give the golden outputs with the cycle
    model's cycles."""
    plain = small_image()
    model, config = plain.model, plain.config
    im2col = compile_model(model, config, im2col=True)
    assert im2col.im2col and not plain.im2col
    assert im2col.input_words == 500 and plain.input_words == 50
    assert inference_cycles(im2col) < inference_cycles(plain)
    x = inputs_for(plain, 2)
    big = dataclasses.replace(FAKE_LINK, max_payload=1024)
    for link, ask, want in ((FAKE_LINK, True, plain), (big, True, im2col), (big, False, plain)):
        fake = FakeDevice(want, link=link)
        with Device(fake, timeout=FAST, progress=False) as dev:
            dev.load(model, im2col=ask)
            out, cycles = dev.run(x)
        for name in REGIONS:
            assert fake.rows[name][:len(want.regions[name])] == want.regions[name], name
        assert np.array_equal(out, golden.run(model, x))
        assert cycles.tolist() == [inference_cycles(want)] * 2


def inputs_for(image, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1 << image.model.act_bits, size=(n,) + tuple(image.model.input_shape))


def test_load_and_run_against_the_fake():
    image = small_image()
    fake = FakeDevice(image)
    x = inputs_for(image, 4)
    with Device(fake, timeout=FAST, progress=False) as dev:
        ident = dev.identify()
        assert ident.config_hash == image.config.hash
        assert ident.max_payload == FAKE_LINK.max_payload
        report = dev.load(image.model)
        out, cycles = dev.run(x)
        assert dev.read_back("bias", 0, 2) == image.regions["bias"][:2]
    for name in REGIONS:
        assert fake.rows[name][:len(image.regions[name])] == image.regions[name], name
    assert np.array_equal(out, golden.run(image.model, x))
    assert out.dtype == np.int64 and out.shape == (4, image.model.classes)
    assert cycles.tolist() == [inference_cycles(image)] * 4
    widths = region_widths(image.config)
    assert report.row_bytes == sum(len(image.regions[n]) * row_bytes(widths[n]) for n in REGIONS)
    loaded = [n for n in REGIONS if image.regions[n]]     # the int8 engine has 4 regions
    assert report.verified and report.frames > len(loaded)   # 128-byte frames: several
    assert dev.stats.retries == 0 and dev.stats.nak_count == 0
    commands = collections.Counter(f.cmd for f in fake.requests)
    assert commands[Command.WRITE] == report.frames and commands[Command.READ] >= len(loaded)


def pool_image():
    """A small random pool model (8 input channels: its conv layer is a pool layer)."""
    model = random_model(np.random.default_rng(7), scheme="pool", act_bits=8,
                         input_shape=(8, 4, 4), convs=(8,), pool=False, dense=(4,))
    return compile_model(model, fit_config(model, lanes=2, taps=4))


def test_precision_switch_rewrites_only_the_program():
    """``set_bits`` after a load: the program region is rewritten and read back, no other
    region is touched, and the device computes at the new precision."""
    image = pool_image()
    fake = FakeDevice(image)
    x = inputs_for(image, 3)
    with Device(fake, timeout=FAST, progress=False) as dev:
        dev.load(image.model)
        weights = list(fake.rows["weights"])
        before = dict(dev.stats.write_bytes)
        switched = compile_model(image.model, image.config, bits=3)
        assert switched.regions["program"] != image.regions["program"]
        fake.image, fake.bits = switched, 3
        reads = sum(f.cmd == Command.READ for f in fake.requests)
        report = dev.set_bits(3)
        out, _ = dev.run(x)
    assert {k: v - before.get(k, 0) for k, v in dev.stats.write_bytes.items()
            if v != before.get(k, 0)}.keys() == {"program"}
    assert fake.rows["weights"] == weights
    assert fake.rows["program"][:len(switched.regions["program"])] == switched.regions["program"]
    assert sum(f.cmd == Command.READ for f in fake.requests) > reads     # read back
    assert report.regions == ("program",) and report.verified
    assert report.rows == {"program": len(switched.regions["program"])}
    assert report.bytes_sent > 0 and report.seconds > 0
    expected = golden.run(image.model, x, bits=3)
    assert np.array_equal(out, expected)
    assert not np.array_equal(expected, golden.run(image.model, x))


def test_precision_switch_is_refused_when_it_cannot_apply():
    flight = small_image()
    with Device(FakeDevice(flight), timeout=FAST, progress=False) as dev:
        with pytest.raises(DeviceError, match="no model loaded"):
            dev.set_bits(3)
        dev.load(flight.model)
        with pytest.raises(DeviceError, match="only pool models"):
            dev.set_bits(3)
    image = pool_image()
    fake = FakeDevice(image)
    with Device(fake, timeout=FAST, progress=False) as dev:
        dev.adopt(image.model)
        fake.config = flight.config          # the device was rebuilt since
        with pytest.raises(ConfigMismatchError, match="load the model again"):
            dev.set_bits(3)
        with pytest.raises(ValueError, match="bits"):
            dev.set_bits(99)
    assert not any(f.cmd == Command.WRITE for f in fake.requests)


def test_a_model_for_another_configuration_is_refused():
    image = small_image()
    other = small_image(convs=(7,))             # a device generated for another model
    fake = FakeDevice(other)
    with Device(fake, timeout=FAST, progress=False) as dev:
        with pytest.raises(ConfigMismatchError, match=f"{image.config.hash}.*{other.config.hash}"):
            dev.load(image.model)
        with pytest.raises(ConfigMismatchError):
            dev.load(image)
    assert [f.cmd for f in fake.requests] == [Command.IDENTIFY]


def test_a_given_configuration_is_used():
    """A device generated with roomier memories than the fitted configuration: loading
    works when its configuration is given (as ``--design`` does)."""
    image = small_image()
    roomy = AcceleratorConfig.from_dict({**image.config.as_dict(), "weight_depth": 300})
    fake = FakeDevice(compile_model(image.model, roomy, im2col=False))
    with Device(fake, timeout=FAST, progress=False) as dev:
        with pytest.raises(ConfigMismatchError, match="fitted"):
            dev.load(image.model)
        dev.load(image.model, config=roomy)
        out, _ = dev.run(inputs_for(image, 1))
    assert np.array_equal(out, golden.run(image.model, inputs_for(image, 1)))


@pytest.mark.parametrize("action, counter", [
    (("nak", Reason.BAD_CRC), "naks"),
    (("nak", Reason.TIMEOUT), "naks"),
    (("nak", Reason.BUSY), "naks"),
    (("nak", Reason.ACCEL_TIMEOUT), "naks"),
    ("drop", "timeouts"),
    ("corrupt", "bad_replies"),
    ("malformed", "bad_replies"),
])
def test_a_failed_attempt_is_retried(action, counter):
    """The first WRITE meets ``action``; it is sent again and the load completes."""
    image = small_image()
    fake = FakeDevice(image, script=["ok", action])
    with Device(fake, timeout=FAST, progress=False) as dev:
        dev.load(image.model)
        out, _ = dev.run(inputs_for(image, 2))
        stats = dev.stats
    assert np.array_equal(out, golden.run(image.model, inputs_for(image, 2)))
    assert stats.retries == 1, stats
    value = getattr(stats, counter)
    assert (value[action[1].name] if counter == "naks" else value) == 1, stats
    first = fake.requests[1]
    attempts = [f for f in fake.requests if (f.cmd, f.payload) == (first.cmd, first.payload)]
    assert len(attempts) == 2 and attempts[0].seq != attempts[1].seq   # fresh sequence byte


def test_a_frame_that_keeps_failing_is_split():
    """The first WRITE (several rows) fails twice: it goes again as two halves, and the
    frames after it are kept to half its size."""
    image = small_image()
    fake = FakeDevice(image, script=["ok", "corrupt", "ok", "corrupt"])
    with Device(fake, timeout=FAST, progress=False) as dev:
        dev.load(image.model)
        stats = dev.stats
    assert stats.splits == 1 and stats.retries == 1, stats
    first = fake.requests[1]
    half = [f for f in fake.requests[2:]
            if f.cmd == Command.WRITE and f.payload[:5] == first.payload[:5]
            and len(f.payload) < len(first.payload)]
    assert len(half) == 1, "the first half of the split WRITE"
    assert len(half[0].payload) - ARGS_BYTES <= (len(first.payload) - ARGS_BYTES + 1) // 2
    for name in REGIONS:
        assert fake.rows[name][:len(image.regions[name])] == image.regions[name], name


@pytest.mark.parametrize("action", ["stale", "garbage"])
def test_stale_replies_and_garbage_are_ignored(action):
    image = small_image()
    fake = FakeDevice(image, script=["ok", "ok", action, "ok", action])
    with Device(fake, timeout=FAST, progress=False) as dev:
        dev.load(image.model)
        stats = dev.stats
    assert stats.retries == 0 and stats.stale_replies >= 2, stats


def test_retries_are_bounded():
    image = small_image()
    fake = FakeDevice(image, script=[("nak", Reason.BAD_CRC)] * 10)
    with Device(fake, timeout=FAST, retries=3, progress=False) as dev:
        with pytest.raises(LinkError, match=r"IDENTIFY: no valid reply after 4 attempts "
                                            r"\(NAK BAD_CRC 4\)"):
            dev.identify()
        assert dev.stats.retries == 3


def test_a_dead_link_is_reported_quickly():
    image = small_image()
    fake = FakeDevice(image, script=["mute"])
    t0 = time.monotonic()
    with Device(fake, timeout=FAST, progress=False) as dev:
        with pytest.raises(LinkError, match="does not answer"):
            dev.identify()
    assert time.monotonic() - t0 < 2


def test_a_refusal_is_not_retried():
    image = small_image()
    fake = FakeDevice(image, script=["ok", ("nak", Reason.REGION_OVERFLOW)])
    with Device(fake, timeout=FAST, progress=False) as dev:
        with pytest.raises(DeviceError, match="REGION_OVERFLOW"):
            dev.load(image.model)
        assert dev.stats.retries == 0


@pytest.mark.parametrize("flaky", [True, False])
def test_verify_reads_every_region_back(flaky):
    """A weight bit that comes back wrong once is rewritten; one that stays wrong
    fails the load."""
    image = small_image()
    fake = FakeDevice(image)
    fake.bad_bit, fake.flaky = 3, flaky
    with Device(fake, timeout=FAST, progress=False) as dev:
        if flaky:
            dev.load(image.model)
            assert fake.rows["weights"][:len(image.regions["weights"])] == \
                image.regions["weights"]
        else:
            with pytest.raises(VerifyError, match="region weights: row 0"):
                dev.load(image.model)


def test_misuse_is_reported():
    image = small_image()
    with Device(FakeDevice(image), timeout=FAST, progress=False) as dev:
        with pytest.raises(DeviceError, match="load"):
            dev.run(inputs_for(image, 1))
        with pytest.raises(ValueError, match="outside region bias"):
            dev.read_back("bias", 0, 10_000)
        dev.reset()
        assert not dev.status().busy
    with pytest.raises(LinkError, match="cannot open"):
        Device("socket://127.0.0.1:1", timeout=FAST)


def test_fault_proxy_damages_at_its_rate():
    proxy = FaultProxy(upstream=1, rate=0.01, seed=3)
    try:
        data = bytes(range(256)) * 200
        out = proxy.damage("to_device", data)
        assert 0.006 * len(data) < proxy.total < 0.014 * len(data)
        kinds = {kind for _, kind in proxy.counts}
        assert kinds == {"flip", "drop", "insert"}
        assert len(out) == len(data) - proxy.counts["to_device", "drop"] \
            + proxy.counts["to_device", "insert"]
        again = FaultProxy(upstream=1, rate=0.01, seed=3)
        assert again.damage("to_device", data) == out        # seeded
        again.close()
    finally:
        proxy.close()


def test_command_line_errors_are_one_line(tmp_path, capsys):
    from shiftpool.cli import main

    image = small_image()
    model_path, inputs = tmp_path / "m.npz", tmp_path / "x.npy"
    save_model(image.model, model_path)
    np.save(inputs, inputs_for(image, 2))
    assert main(["run", str(model_path), "--port", "socket://127.0.0.1:1", "--inputs",
                 str(inputs), "--timeout", "0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: cannot open socket://127.0.0.1:1"), err
    assert main(["serve-sim", str(tmp_path / "missing.npz")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: ")


def test_serve_sim_takes_a_generated_design(tmp_path):
    """``serve-sim`` simulates the configuration of a generated design's manifest, and
    refuses a port that is taken."""
    import socket

    from shiftpool.sim.flow import generate
    from shiftpool.sim.runner import SimulatorError
    from shiftpool.sim.serve import device_config, serve_sim

    image = small_image()
    model_path = tmp_path / "m.npz"
    save_model(image.model, model_path)
    roomy = AcceleratorConfig.from_dict({**image.config.as_dict(), "bias_depth": 40})
    generate(model_path, tmp_path / "design", config=roomy)
    assert device_config(tmp_path / "design") == roomy
    assert device_config(tmp_path / "design" / "manifest.json") == roomy
    assert device_config(model_path, lanes=2, taps=4) == image.config
    with socket.create_server(("127.0.0.1", 0)) as taken:
        with pytest.raises(SimulatorError, match="cannot listen"), \
                serve_sim(image.config, taken.getsockname()[1]):
            pass


# -- the simulated device ---------------------------------------------------------------

#: Test images of the end-to-end runs.
IMAGES = 50
#: Fault rate per byte and direction of the fault-injection run.
FAULT_RATE = 1e-3


@pytest.fixture(scope="module")
def demo(digits_models, digits_data):
    """The demo model (FLightNN, fitted with 2 lanes x 4 taps) and test inputs."""
    model = digits_models["flightnn"]
    return model, model.quantize_input(digits_data[2][:IMAGES])


@pytest.fixture(scope="module")
def device(demo, sim_build_dir):
    from shiftpool.sim.serve import serve_sim

    with serve_sim(demo[0], lanes=2, taps=4, build_dir=sim_build_dir, trace=True) as server:
        yield server


def trace_lines(trace: Path) -> list[str]:
    return trace.read_text().splitlines()


def overlapped_writes(lines: list[str]) -> tuple[int, int]:
    """``(overlapped, pairs)``: of the consecutive WRITE frames the device received, how
    many arrived (their first byte) before the device had sent the previous one's ACK:
    a driver that waits for each ACK before sending on overlaps none, one that keeps
    frames in flight overlaps nearly all, however fast the host runs."""
    frames = [json.loads(line) for line in lines]
    writes = [f for f in frames if f["dir"] == "rx" and f["cmd"] == Command.WRITE and f["ok"]]
    acks = [f for f in frames if f["dir"] == "tx" and f["cmd"] == Command.WRITE | REPLY]
    pairs = list(zip(writes[1:], acks, strict=False))
    return sum(w["start"] < a["end"] for w, a in pairs), len(pairs)


def streaming_efficiency(lines: list[str], divisor: int, row_bytes_total: int) -> float:
    """Row bytes over the cycles from the first WRITE's first bit to the last WRITE's
    ACK, as a fraction of the line rate (one byte per ``10 * divisor`` cycles)."""
    frames = [json.loads(line) for line in lines]
    writes = [f for f in frames if f["dir"] == "rx" and f["cmd"] == Command.WRITE and f["ok"]]
    acks = [f for f in frames if f["dir"] == "tx" and f["cmd"] == Command.WRITE | REPLY]
    cycles = acks[-1]["end"] - writes[0]["start"]
    return row_bytes_total / (cycles / (10 * divisor))


@pytest.mark.verilator
def test_end_to_end_over_tcp(device, demo):
    """The driver loads the demo model into the simulated device and runs 50 test
    images: outputs equal the golden model bit for bit, cycles the cycle model's."""
    model, x = demo
    t0 = time.monotonic()
    with Device(device.url, progress=False) as dev:
        ident = dev.identify()
        assert ident.config_hash == fit_config(model, lanes=2, taps=4).hash
        assert ident.divisor == device.link.divisor
        mark = len(trace_lines(device.trace))      # measure the load alone
        report = dev.load(model)
        t_load = time.monotonic() - t0
        outputs, cycles = dev.run(x)
        wall = time.monotonic() - t0
        status = dev.status()
        stats = dev.stats
    expected = golden.run(model, x)
    assert np.array_equal(outputs, expected), "device outputs differ from the golden model"
    assert cycles.tolist() == [inference_cycles(dev.image)] * len(x)
    assert report.verified
    lines = trace_lines(device.trace)[mark:]
    efficiency = streaming_efficiency(lines, device.link.divisor, report.row_bytes)
    overlapped, pairs = overlapped_writes(lines)
    print(f"\nload {t_load:.2f} s (write {report.write_seconds:.2f} s, verify "
          f"{report.verify_seconds:.2f} s), {len(x)} runs, total {wall:.2f} s; "
          f"{report.row_bytes} row bytes in {report.line_bytes} line bytes; streaming at "
          f"{efficiency:.1%} of the line rate; {overlapped} of {pairs} writes sent before "
          f"the previous ACK; {stats.summary()}")
    # The driver keeps writes in flight (the streaming rate itself depends on how fast
    # this machine runs the host beside the simulated device: 87-95% measured).
    assert pairs >= 3 and overlapped >= pairs - 1
    assert stats.retries == 0
    # STATUS through the device: idle, the last run's cycles, every frame good.
    assert not status.busy and status.last_cycles == inference_cycles(dev.image)
    assert status.counters["frames"] >= len(x) + 1
    assert all(status.counters[k] == 0 for k in status.counters if k != "frames"), \
        status.counters


def _frames(data: bytes, max_payload: int) -> list[Frame]:
    return [e for e in FrameDecoder(max_payload).feed_bytes(bytes(data)) if isinstance(e, Frame)]


@pytest.mark.verilator
def test_faults_are_survived(device, demo):
    """Through a proxy that flips, drops and inserts bytes: the load and 50 runs still
    give the golden outputs; NAKs and retries happened; no frame that was damaged on
    the way passed a CRC check on either side."""
    model, x = demo
    seed = int(os.environ.get("SHIFTPOOL_FAULT_SEED", "1"))
    print(f"\nfault seed {seed} (set SHIFTPOOL_FAULT_SEED to change), rate {FAULT_RATE}")
    accepted = []
    faulthandler.dump_traceback_later(240, exit=True)       # a hang fails loudly
    try:
        with FaultProxy(device.port, FAULT_RATE, seed) as proxy, \
                Device(proxy.url, timeout=0.5, retries=20, progress=False) as dev:
            feed = dev._decoder.feed_bytes

            def spy(data):
                events = feed(data)
                accepted.extend(e for e in events if isinstance(e, Frame))
                return events

            dev._decoder.feed_bytes = spy
            t0 = time.monotonic()
            dev.load(model)
            outputs, _ = dev.run(x)
            wall = time.monotonic() - t0
            stats = dev.stats
    finally:
        faulthandler.cancel_dump_traceback_later()
    print(f"{dict(proxy.counts)} faults; {wall:.1f} s; driver: {stats.summary()}")
    assert np.array_equal(outputs, golden.run(model, x)), f"seed {seed}"
    assert proxy.total > 0 and stats.nak_count > 0 and stats.retries > 0, f"seed {seed}"
    limit = 0xFFFF
    sent = {(f.cmd, f.seq, f.payload) for f in _frames(proxy.received["to_device"], limit)}
    arrived = _frames(proxy.delivered["to_device"], device.link.max_payload)
    assert all((f.cmd, f.seq, f.payload) in sent for f in arrived), f"seed {seed}"
    replies = {(f.cmd, f.seq, f.payload) for f in _frames(proxy.received["to_host"], limit)}
    assert accepted and all((f.cmd, f.seq, f.payload) in replies for f in accepted), \
        f"seed {seed}"


#: Requests of the soak at 1% faults in the default run (``shiftpool bench --soak``
#: runs 10**4).
SOAK_REQUESTS = 200


@pytest.mark.verilator
def test_link_soak_at_one_percent_faults(device, demo):
    """1e-2 faults per byte both ways (flips, drops, inserts), loads and runs through
    the real driver: every output golden, no damaged frame accepted by either side, no
    hang (``sim/soak.py``); the retry and NAK counts are printed."""
    from shiftpool.sim.soak import soak

    model, x = demo
    seed = seeds(1, 31)[0]
    report = soak(model, x, device.port, device.link.max_payload, requests=SOAK_REQUESTS,
                  rate=1e-2, seed=seed)
    print(f"\n{report.summary()}")
    assert report.requests >= SOAK_REQUESTS and report.loads >= 1 and report.runs > 0
    # At this rate the faults must have been met: resends after NAKs and timeouts.
    assert sum(report.faults.values()) > 100 and report.retries > 0 and report.naks


@pytest.mark.verilator
def test_command_line_serve_sim_and_run(demo, sim_build_dir, tmp_path):
    """``shiftpool serve-sim`` in its own process, ``shiftpool run --check`` against it;
    SIGINT stops the server and leaves no process of its group behind."""
    from shiftpool.cli import main

    model, x = demo
    model_path, inputs = tmp_path / "flightnn.npz", tmp_path / "x.npy"
    save_model(model, model_path)
    np.save(inputs, x[:8])
    server = subprocess.Popen(
        [sys.executable, "-m", "shiftpool.cli", "serve-sim", str(model_path), "--port", "0",
         "--build-dir", str(sim_build_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
        env={k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"})
    group = None
    try:
        lines = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = server.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "ready on" in line:
                break
        text = "".join(lines)
        match = re.search(r"ready on (\S+) .*process group (\d+)", text)
        assert match, text
        url, group = match.group(1), int(match.group(2))
        code = main(["run", str(model_path), "--port", url, "--inputs", str(inputs), "--check",
                     "--outputs", str(tmp_path / "y.npy")])
        assert code == 0
        assert np.array_equal(np.load(tmp_path / "y.npy"), golden.run(model, x[:8]))
    finally:
        server.send_signal(signal.SIGINT)
        try:
            assert server.wait(30) == 0
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
            server.stdout.close()
    assert group is not None and not _group_members(group), _group_members(group)


def _group_members(group: int) -> list[int]:
    """Processes in process group ``group``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@pytest.mark.verilator
def test_pseudo_terminal(demo, sim_build_dir):
    """The same device on a pty: pyserial opens a real tty path."""
    from shiftpool.sim.serve import serve_sim

    model, x = demo
    with serve_sim(model, build_dir=sim_build_dir, pty=True) as server:
        assert server.tty and server.url == server.tty and os.path.exists(server.tty)
        with Device(server.url, progress=False) as dev:
            dev.load(model)
            outputs, _ = dev.run(x[:5])
    assert np.array_equal(outputs, golden.run(model, x[:5]))


@pytest.mark.icarus
def test_icarus_device(demo, sim_build_dir):
    """serve-sim's Icarus option: the same driver, the same answers (fewer inputs)."""
    from shiftpool.sim.serve import serve_sim

    model, x = demo
    with serve_sim(model, simulator="icarus", build_dir=sim_build_dir) as server, \
            Device(server.url, timeout=5, progress=False) as dev:
        dev.load(model, verify=False)
        assert dev.read_back("program")[:len(dev.image.regions["program"])] == \
            dev.image.regions["program"]
        outputs, cycles = dev.run(x[:2])
    assert np.array_equal(outputs, golden.run(model, x[:2]))
    assert cycles.tolist() == [inference_cycles(dev.image)] * 2


@pytest.mark.verilator
def test_precision_switch_on_the_simulated_device(digits_pool_models, digits_data, sim_build_dir,
                                                  tmp_path, capsys):
    """The digits pool model (S=16) in the simulated device: loaded at 8 bits, then
    ``shiftpool run --bits 3 --keep-weights`` (a new driver, as a second command would
    be) switches it by rewriting the program region only; the device's outputs equal
    the golden model at 3 bits, its weights and indices read back unchanged."""
    from shiftpool.sim.serve import serve_sim

    from shiftpool.cli import main

    model = digits_pool_models[16]
    x = model.quantize_input(digits_data[2][:8])
    save_model(model, tmp_path / "pool.npz")
    np.save(tmp_path / "x.npy", x)
    with serve_sim(model, lanes=2, taps=4, build_dir=sim_build_dir) as server:
        with Device(server.url, progress=False) as dev:
            dev.load(model)
            full, _ = dev.run(x)
            kept = {n: dev.read_back(n, 0, len(dev.image.regions[n]))
                    for n in ("weights", "indices", "pool") if dev.image.regions[n]}
        assert np.array_equal(full, golden.run(model, x))
        with Device(server.url, progress=False) as dev:
            dev.adopt(model)
            report = dev.set_bits(3)
            low, cycles = dev.run(x)
            assert {n for n, v in dev.stats.write_bytes.items() if v} == {"program"}
            for name, rows in kept.items():
                assert dev.read_back(name, 0, len(rows)) == rows, name
        expected = golden.run(model, x, bits=3)
        assert np.array_equal(low, expected)
        assert not np.array_equal(expected, full)
        assert cycles.tolist() == [inference_cycles(dev.image)] * len(x)
        capsys.readouterr()
        assert main(["run", str(tmp_path / "pool.npz"), "--port", server.url, "--inputs",
                     str(tmp_path / "x.npy"), "--bits", "2", "--keep-weights", "--check"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"precision switch: \d+ program rows, \d+ bytes sent in [\d.]+ s "
                     r"\(verified by read-back\); no other region written", out), out
    assert f"device == golden: {len(x)} / {len(x)} inputs" in out
    with capsys.disabled():
        print(f"\nprecision switch to 3 bits: {report.rows['program']} program rows, "
              f"{report.bytes_sent} bytes sent in {report.seconds:.3f} s; "
              + next(line for line in out.splitlines() if "precision switch" in line))
