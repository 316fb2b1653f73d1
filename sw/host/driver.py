"""The host driver: load a model into a shiftpool device and run inputs on it.

The device is anything that speaks ``docs/protocol.md`` on a byte stream that
pyserial opens: a board's UART (``/dev/ttyUSB1``), the simulated device
(``socket://127.0.0.1:7777``, see :mod:`shiftpool.sim.serve`) or, in unit tests, a
fake on ``loop://``. The same code drives all of them::

    with Device("socket://127.0.0.1:7777") as dev:
        print(dev.identify())
        dev.load(model)                     # compiled for the device, verified
        outputs, cycles = dev.run(x)        # int64 (N, classes), (N,)

Reliability: every request carries a fresh sequence byte, and a reply counts only if
its sequence byte and command match a request in flight and its CRC and length are
right, so stale replies (to an earlier attempt) and NAKs of line garbage are
ignored. A request is resent after a NAK that a resend can cure (bad CRC, length,
timeout, busy), a reply dropped for its CRC, or no reply in time, at most
``retries`` times; then :class:`LinkError`. A WRITE or READ of several rows that fails
twice is split in two, and later frames are kept below half its size until the line
has been clean for a while: on a noisy line short frames get through. Requests a
resend cannot cure (a region overflow, say) raise :class:`DeviceError`. WRITE, READ
and RUN keep two requests in flight, so the line does not idle while the host waits
for a reply.
:attr:`Device.stats` counts what happened.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import serial

from ...hw.config import AcceleratorConfig
from ...hw.link.protocol import (
    ARGS_BYTES,
    REPLY,
    STATUS_COUNTERS,
    Command,
    Identity,
    Reason,
    Status,
    parse_identify,
    parse_nak,
    parse_rows,
    parse_run_reply,
    parse_status,
    read_payload,
    region_code,
    row_bytes,
    run_payload,
    write_payload,
)
from ...hw.program import REGIONS
from ..model.file import QuantModel
from .frames import FRAME_OVERHEAD, Frame, FrameDecoder, FrameError, encode_frame

if TYPE_CHECKING:
    from ..compile.image import Image

__all__ = [
    "ConfigMismatchError", "DEFAULT_BAUD", "Device", "DeviceError", "DriverError", "LinkError",
    "LinkStats", "LoadReport", "SwitchReport", "VerifyError",
]

#: Baud rate a serial port is opened with unless told otherwise.
DEFAULT_BAUD = 115_200
#: Bits on the line per byte (8N1).
BITS_PER_BYTE = 10
#: Requests in flight while streaming (``docs/protocol.md`` §2.3 allows two).
WINDOW = 2
#: NAK reasons a resend of the same request can cure: the frame was damaged on the
#: line (CRC, length, timeout), or the device was busy or had to reset a stall.
RETRYABLE = frozenset({Reason.BAD_CRC, Reason.BAD_LENGTH, Reason.TIMEOUT, Reason.BUSY,
                       Reason.ACCEL_TIMEOUT})
#: Reasons that only a frame that passed its CRC check can get.
_AFTER_CRC = frozenset({Reason.BAD_REGION, Reason.REGION_OVERFLOW, Reason.UNKNOWN_COMMAND,
                        Reason.OUTPUT_OVERFLOW})
#: Timeouts in a row without a single byte from the device before the link is
#: declared dead.
DEAD_AFTER = 3
#: Longest wait in one read call, s.
_POLL = 0.05
#: Failed attempts of a WRITE or READ of several rows before it is split in two (a
#: noisy line spoils long frames far more often than short ones).
SPLIT_AFTER = 2
#: Bytes (payload or reply) below which a failing frame is not split further.
MIN_FRAME = 32
#: Clean replies in a row after which the frame size limit doubles again.
GROW_AFTER = 16


class DriverError(RuntimeError):
    """Base of the driver's errors."""


class LinkError(DriverError):
    """The link failed: no valid reply after every retry, or no answer at all."""


class DeviceError(DriverError):
    """The device refused a request for a reason a resend cannot fix."""


class ConfigMismatchError(DeviceError):
    """The model was compiled for another configuration than the device's."""


class VerifyError(DeviceError):
    """A region read back differs from what was written."""


@dataclasses.dataclass
class LinkStats:
    """What the link did since the device was opened (or :meth:`Device.reset_stats`).

    Members
    -------
    requests : requests answered
    frames_sent : request frames written, resends included
    retries : resends (after a NAK, a damaged reply or a timeout)
    naks : NAKs of this driver's requests, by reason name
    timeouts : replies that did not come in time
    bad_replies : reply frames the driver dropped (CRC, length, cut short)
    stale_replies : good frames that answer no request in flight (late replies to an
        earlier attempt, NAKs of line garbage)
    splits : failing frames resent as two smaller ones
    bytes_sent, bytes_received : bytes on the line
    write_bytes : bytes of WRITE frames sent, by region name (resends included)
    """

    requests: int = 0
    frames_sent: int = 0
    retries: int = 0
    naks: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    timeouts: int = 0
    bad_replies: int = 0
    stale_replies: int = 0
    splits: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    write_bytes: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    @property
    def nak_count(self) -> int:
        return sum(self.naks.values())

    def summary(self) -> str:
        naks = ", ".join(f"{k} {v}" for k, v in sorted(self.naks.items())) or "none"
        return (f"{self.requests} requests, {self.frames_sent} frames, {self.retries} "
                f"retries, NAKs: {naks}, {self.timeouts} timeouts, {self.bad_replies} bad "
                f"and {self.stale_replies} stale replies, {self.splits} frames split, "
                f"{self.bytes_sent} bytes sent, {self.bytes_received} received")


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What :meth:`Device.load` streamed.

    Members
    -------
    config_hash : the device's (and the image's) configuration hash
    rows : rows written per region
    row_bytes : bytes of row data written (the packed model as it travels)
    line_bytes : bytes of the WRITE frames, framing and arguments included
    frames : WRITE frames (first attempts)
    write_seconds : wall time of the WRITE phase
    verify_seconds : wall time of the READ-back comparison (0 if not verified)
    """

    config_hash: str
    rows: dict
    row_bytes: int
    line_bytes: int
    frames: int
    write_seconds: float
    verify_seconds: float

    @property
    def verified(self) -> bool:
        return self.verify_seconds > 0 or self.row_bytes == 0


@dataclasses.dataclass(frozen=True)
class SwitchReport:
    """What :meth:`Device.rewrite` (and :meth:`Device.set_bits`) did.

    Members
    -------
    regions : the regions written
    rows : rows written per region
    bytes_sent : bytes on the line to the device, frames of the write and the
        read-back requests and the IDENTIFY included
    seconds : wall time from the IDENTIFY (the hash check) to the end of the read-back
    verified : read back and compared
    """

    regions: tuple
    rows: dict
    bytes_sent: int
    seconds: float
    verified: bool


@dataclasses.dataclass(eq=False)
class _Request:
    """One request and what is known of its attempts."""

    cmd: int
    payload: bytes
    check: Callable[[bytes], bool]     # is a reply payload well-formed?
    reply_size: int                    # expected reply payload bytes (for the timeout)
    label: str
    weight: int = 0                    # progress units when done
    split: Callable[[], list] | None = None     # the same work as two smaller requests
    attempts: int = 0
    seq: int = -1
    reply: bytes | None = None
    parts: list | None = None          # the requests it was split into
    history: list = dataclasses.field(default_factory=list)
    region: str | None = None          # the region a WRITE writes

    @property
    def size(self) -> int:
        """The larger of its payload and its reply payload."""
        return max(len(self.payload), self.reply_size)

    def answer(self) -> bytes:
        """The reply payload (of all its parts if it was split)."""
        if self.parts is None:
            return self.reply
        return b"".join(part.answer() for part in self.parts)


class Device:
    """A shiftpool device behind a pyserial URL.

    Parameters
    ----------
    url : str or serial port object
        ``/dev/ttyUSB1``, ``socket://127.0.0.1:7777``, ``loop://``, any URL
        ``serial.serial_for_url`` opens; or an already open pyserial port.
    baudrate : int
        The UART's rate. For a socket it only scales the reply timeouts (the time a
        frame needs on the line).
    timeout : float
        Seconds a reply may take beyond the time its request and the reply need on
        the line, before the request is resent.
    retries : int
        Resends of one request before :class:`LinkError`.
    progress : bool
        Show progress bars (tqdm, on stderr) while streaming.

    Raises
    ------
    LinkError
        If the port cannot be opened.
    """

    def __init__(self, url, baudrate: int = DEFAULT_BAUD, timeout: float = 1.0,
                 retries: int = 8, progress: bool = True):
        if timeout <= 0 or retries < 0:
            raise ValueError(f"timeout {timeout} must be positive and retries {retries} "
                             f"not negative")
        self.baudrate = int(baudrate)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.progress = progress
        if isinstance(url, str):
            self.url = url
            try:
                self._port = serial.serial_for_url(url, baudrate=self.baudrate, timeout=_POLL)
            except (serial.SerialException, OSError, ValueError) as exc:
                raise LinkError(f"cannot open {url}: {exc}; is the board plugged in, or is "
                                f"'shiftpool serve-sim' running?") from None
        else:
            self._port = url
            self.url = getattr(url, "portstr", None) or repr(url)
        self._port_timeout = self._port.timeout
        _no_delay(self._port)
        self._decoder = FrameDecoder(0xFFFF)
        self._seq = 0
        self._by_seq: dict[int, _Request] = {}
        self._identity: Identity | None = None
        self._image = None
        self._frame_limit = 0xFFFF      # bytes; shrinks on a noisy line, grows back
        self._clean = 0                 # clean replies in a row
        self.stats = LinkStats()
        try:
            self._port.reset_input_buffer()
        except (serial.SerialException, OSError, NotImplementedError):
            pass                # a port that cannot flush is still usable

    # -- context manager -----------------------------------------------------------------

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the port."""
        self._port.close()

    def reset_stats(self) -> None:
        self.stats = LinkStats()

    # -- commands ------------------------------------------------------------------------

    def identify(self) -> Identity:
        """What the device is: protocol version, config hash, capabilities, widths and
        depths (:class:`~shiftpool.hw.link.protocol.Identity`)."""
        req = _Request(Command.IDENTIFY, b"", _parses(parse_identify), 64, "IDENTIFY")
        self._transact([req])
        identity = parse_identify(req.answer())
        self._identity = identity
        self._decoder.max_payload = identity.max_payload
        self._frame_limit = min(self._frame_limit, identity.max_payload)
        return identity

    @property
    def image(self) -> Image | None:
        """The :class:`~shiftpool.sw.compile.image.Image` this driver loaded last (or None)."""
        return self._image

    @property
    def identity(self) -> Identity:
        """The last IDENTIFY reply (asked for on first use)."""
        return self._identity if self._identity is not None else self.identify()

    def status(self) -> Status:
        """Busy flag, cycles of the last RUN and the device's link counters."""
        cycle_bits = self.identity.cycle_bits
        size = 1 + row_bytes(cycle_bits) + 2 * len(STATUS_COUNTERS)
        req = _Request(Command.STATUS, b"", lambda p: len(p) == size, size, "STATUS")
        self._transact([req])
        return parse_status(req.answer(), cycle_bits)

    def reset(self) -> None:
        """Abort an inference and clear the device's counters (memories are kept)."""
        self._transact([_Request(Command.RESET, b"", _empty, 0, "RESET")])

    def write_region(self, region: int | str, rows: Sequence[int], start: int = 0) -> int:
        """Write ``rows`` into ``region`` from row ``start``; returns the WRITE frames."""
        reqs = self._write_requests(region, list(rows), start)
        self._transact(reqs, window=WINDOW, progress=self._bar(reqs, f"write {region}"))
        return len(reqs)

    def read_back(self, region: int | str, start: int = 0, count: int | None = None
                  ) -> list[int]:
        """Rows ``start ..`` of ``region`` as integers (``count`` rows; by default to the
        end of the region)."""
        name = REGIONS[region_code(region)]
        depth, width = self.identity.regions[name]
        count = depth - start if count is None else count
        if start < 0 or count < 0 or start + count > depth:
            raise ValueError(f"rows {start}..{start + count - 1} are outside region {name} "
                             f"(depth {depth})")
        reqs = self._read_requests(name, start, count)
        self._transact(reqs, window=WINDOW, progress=self._bar(reqs, f"read {name}"))
        rows = []
        for req in reqs:
            rows += parse_rows(req.answer(), width)
        return rows

    def load(self, model: QuantModel | Image | str | Path,
             config: AcceleratorConfig | None = None, verify: bool = True,
             bits: int | dict | None = None, im2col: bool = False) -> LoadReport:
        """Compile ``model`` for the device, write its regions and verify them.

        Parameters
        ----------
        model : QuantModel, model file path or :class:`~shiftpool.sw.compile.image.Image`
            A model is compiled for ``config``, or for the configuration
            :func:`shiftpool.sim.flow.fit_config` fits to it with the device's lanes and
            taps; an image is loaded as it is.
        config : AcceleratorConfig, optional
            The device's configuration (e.g. from a generated design's manifest), when
            it is not the fitted one.
        verify : bool
            Read every written region back and compare (default).
        bits : int or dict, optional
            A pool model's activation precision (see :meth:`set_bits`).
        im2col : bool
            Send a first conv layer's input as im2col (``docs/model-format.md`` §2.2)
            where it packs into fewer words and its input fits one RUN frame: fewer
            cycles on the device, but about 9x the input bytes on the link, which over
            a UART costs far more time than the cycles save (a byte at 115200 baud is
            about 2000 cycles at 24 MHz). Off by default: the plain input.

        Raises
        ------
        ConfigMismatchError
            If the configuration's hash differs from the device's.
        VerifyError
            If a region reads back differently, twice.
        """
        image = self._image_for(model, config, bits, im2col)
        widths = image.memory_map()
        t0 = time.monotonic()
        reqs = []
        for name in REGIONS:
            reqs += self._write_requests(name, image.regions[name], 0)
        self._transact(reqs, window=WINDOW, progress=self._bar(reqs, "load"))
        write_s = time.monotonic() - t0
        t1 = time.monotonic()
        if verify:
            self._verify(image)
        verify_s = time.monotonic() - t1 if verify else 0.0
        self._image = image
        return LoadReport(
            config_hash=image.config.hash,
            rows={name: len(image.regions[name]) for name in REGIONS},
            row_bytes=sum(len(image.regions[n]) * row_bytes(widths[n]["width"])
                          for n in REGIONS),
            line_bytes=sum(len(r.payload) + FRAME_OVERHEAD for r in reqs), frames=len(reqs),
            write_seconds=write_s, verify_seconds=verify_s)

    def run(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run integer inputs (``(N, *input_shape)`` or one sample) on the loaded model.

        Returns ``(outputs, cycles)``: int64 ``(N, classes)`` and int64 ``(N,)``, the
        cycles the accelerator counted for each inference.
        """
        from ..schemes import golden

        if self._image is None:
            raise DeviceError("no model loaded by this driver; call load(model) first "
                              "(the device's memories may hold anything)")
        ident = self.identity
        model = self._image.model
        # The values sent: the input map's activation words, lane by lane.
        x = self._image.input_stream(golden.check_inputs(model, inputs))
        classes = model.classes
        size = row_bytes(ident.cycle_bits) + classes * row_bytes(ident.acc_width)
        payload_limit = min(ident.max_payload, ident.act_depth * row_bytes(ident.act_bits))
        reqs = []
        for n, words in enumerate(x):
            payload = run_payload(words, ident.act_bits)
            if len(payload) > payload_limit:
                raise DeviceError(f"an input of {len(words)} words does not fit one RUN frame "
                                  f"({payload_limit} bytes)")
            reqs.append(_Request(Command.RUN, payload, lambda p, s=size: len(p) == s, size,
                                 f"RUN of input {n}", weight=1))
        self._transact(reqs, window=WINDOW, progress=self._bar(reqs, "run", unit="inf"))
        outputs = np.zeros((len(x), classes), dtype=np.int64)
        cycles = np.zeros(len(x), dtype=np.int64)
        for n, req in enumerate(reqs):
            cycles[n], outs = parse_run_reply(req.answer(), ident.cycle_bits, ident.acc_width)
            outputs[n] = outs
        return outputs, cycles

    def adopt(self, model: QuantModel | str | Path,
              config: AcceleratorConfig | None = None) -> None:
        """Take the device as holding ``model`` already (loaded by an earlier driver,
        e.g. an earlier ``shiftpool run``), without writing anything: the configuration
        hash and memory map are checked as :meth:`load` checks them. Then
        :meth:`set_bits` and :meth:`run` work on it. The device's regions are not read,
        so a device loaded with another model of the same configuration computes
        that one's outputs."""
        self._image = self._image_for(model, config)

    def set_bits(self, bits: int | dict | None, verify: bool = True) -> SwitchReport:
        """Change a loaded pool model's activation precision on the device: recompile
        it at ``bits`` (as :func:`shiftpool.sw.compile.image.compile_model` takes it)
        and rewrite the program region only; weights, pool and indices stay. The
        device's configuration hash is checked first and the program is read back.

        Raises
        ------
        DeviceError
            No model was loaded by this driver, or it is not a pool model.
        ConfigMismatchError
            The device's configuration hash is no longer the loaded image's.
        """
        from ..compile.image import compile_model

        if self._image is None:
            raise DeviceError("no model loaded by this driver; load the model first, then "
                              "change its precision")
        old = self._image
        if old.model.scheme != "pool":
            raise DeviceError(f"the loaded model is {old.model.scheme}: only pool models "
                              f"have a run-time activation precision (--bits)")
        image = compile_model(old.model, old.config, bits=bits, mode=old.modes or "direct",
                              im2col=old.im2col)
        changed = [n for n in REGIONS if image.regions[n] != old.regions[n]]
        if set(changed) - {"program"}:
            raise DeviceError(f"changing the precision would change the regions "
                              f"{', '.join(changed)}, not only the program; load the model "
                              f"again instead")
        return self.rewrite(image, ("program",), verify=verify)

    def rewrite(self, image: Image, regions: Sequence[str], verify: bool = True
                ) -> SwitchReport:
        """Write ``regions`` of ``image`` into the device that holds this driver's loaded
        image, and nothing else; the image must be for the device's configuration
        (IDENTIFY is asked again: a device rebuilt or reset since the load is caught).
        The program region is written last, so a device never runs a new program on old
        tables."""
        if self._image is None:
            raise DeviceError("no model loaded by this driver; call load(model) first")
        unknown = [n for n in regions if n not in REGIONS]
        if unknown:
            raise ValueError(f"unknown region {unknown[0]!r}; regions are {', '.join(REGIONS)}")
        sent0 = self.stats.bytes_sent
        t0 = time.monotonic()
        ident = self.identify()
        if ident.config_hash != image.config.hash:
            raise ConfigMismatchError(f"the device now has configuration {ident.config_hash}, "
                                      f"the image is for {image.config.hash}; load the model "
                                      f"again")
        order = sorted(regions, key=lambda n: n == "program")
        reqs = []
        for name in order:
            # A shorter region leaves old rows beyond its end; nothing reads them.
            reqs += self._write_requests(name, list(image.regions[name]), 0)
        self._transact(reqs, window=WINDOW, progress=self._bar(reqs, "rewrite"))
        if verify:
            self._verify(image, order)
        seconds = time.monotonic() - t0
        self._image = image
        return SwitchReport(regions=tuple(order),
                            rows={n: len(image.regions[n]) for n in order},
                            bytes_sent=self.stats.bytes_sent - sent0, seconds=seconds,
                            verified=verify)

    # -- what goes on the line ------------------------------------------------------------

    def _image_for(self, model, config, bits=None, im2col: bool = False):
        from ...sw.compile.fit import fit_config
        from ...sw.model.file import read_model
        from ..compile.image import Image, compile_model

        ident = self.identity
        if isinstance(model, Image):
            image = model
        else:
            if isinstance(model, (str, Path)):
                model = read_model(Path(model))
            if not isinstance(model, QuantModel):
                raise TypeError(f"model must be a QuantModel, a model file or an Image, not "
                                f"{type(model).__name__}")
            if config is None:
                config = fit_config(model, lanes=ident.lanes, taps=ident.taps)
                where = f"the configuration fitted to the model ({ident.lanes} lanes x " \
                        f"{ident.taps} taps)"
            else:
                where = "the given configuration"
            if config.hash != ident.config_hash:
                raise ConfigMismatchError(
                    f"{where} has hash {config.hash}, the device {ident.config_hash}: the "
                    f"device was generated for another model or configuration; start the "
                    f"simulated device for this model, build the board for it, or pass the "
                    f"device's design (manifest) as the configuration")
            image = compile_model(model, config, bits=bits, im2col=None if im2col else False)
            if image.im2col and image.input_words * row_bytes(config.act_bits) > min(
                    ident.max_payload, ident.act_depth * row_bytes(config.act_bits)):
                # An im2col input (docs/model-format.md §2.2) too long for one RUN frame:
                # the first layer reads the plain input instead (same hardware).
                image = compile_model(model, config, bits=bits, im2col=False)
        if image.config.hash != ident.config_hash:
            raise ConfigMismatchError(f"the image is for configuration {image.config.hash}, "
                                      f"the device has {ident.config_hash}")
        for name, info in image.memory_map().items():
            # A region the device does not list has depth 0 (IDENTIFY leaves it out).
            if ident.regions.get(name, (0, 0)) != (info["depth"], info["width"]):
                raise ConfigMismatchError(
                    f"region {name}: the device reports {ident.regions.get(name)} (depth, "
                    f"width), the configuration {(info['depth'], info['width'])}")
        return image

    def _write_requests(self, region, rows: list[int], start: int) -> list[_Request]:
        name = REGIONS[region_code(region)]
        if not rows:
            return []
        per = (self.identity.max_payload - ARGS_BYTES) // row_bytes(self.identity.regions[name][1])
        return [self._write_request(name, start + first, rows[first:first + per])
                for first in range(0, len(rows), per)]

    def _write_request(self, name: str, start: int, rows: list[int]) -> _Request:
        payload = write_payload(name, start, rows, self.identity.regions[name][1])
        half = len(rows) // 2
        split = None if half == 0 else (
            lambda: [self._write_request(name, start, rows[:half]),
                     self._write_request(name, start + half, rows[half:])])
        return _Request(Command.WRITE, payload, _empty, 0,
                        f"WRITE of {name} rows {start}..{start + len(rows) - 1}",
                        weight=len(payload) - ARGS_BYTES, split=split, region=name)

    def _read_requests(self, name: str, start: int, count: int) -> list[_Request]:
        per = self.identity.max_payload // row_bytes(self.identity.regions[name][1])
        return [self._read_request(name, first, min(per, start + count - first))
                for first in range(start, start + count, per)]

    def _read_request(self, name: str, start: int, count: int) -> _Request:
        size = count * row_bytes(self.identity.regions[name][1])
        half = count // 2
        split = None if half == 0 else (
            lambda: [self._read_request(name, start, half),
                     self._read_request(name, start + half, count - half)])
        return _Request(Command.READ, read_payload(name, start, count),
                        lambda p: len(p) == size, size,
                        f"READ of {name} rows {start}..{start + count - 1}", weight=size,
                        split=split)

    def _verify(self, image, regions: Sequence[str] = REGIONS) -> None:
        """Read every written region of ``regions`` back; rewrite a differing stretch
        once."""
        names = [name for name in regions if image.regions[name]]
        reqs = {name: self._read_requests(name, 0, len(image.regions[name])) for name in names}
        everything = [r for name in names for r in reqs[name]]
        self._transact(everything, window=WINDOW, progress=self._bar(everything, "verify"))
        for name in names:
            rows, width = image.regions[name], self.identity.regions[name][1]
            got = [row for r in reqs[name] for row in parse_rows(r.answer(), width)]
            bad = [i for i, (a, b) in enumerate(zip(got, rows, strict=True)) if a != b]
            if not bad:
                continue
            self.write_region(name, rows[bad[0]:bad[-1] + 1], bad[0])
            got = self.read_back(name, 0, len(rows))
            bad = [i for i, (a, b) in enumerate(zip(got, rows, strict=True)) if a != b]
            if bad:
                raise VerifyError(f"region {name}: row {bad[0]} reads back {got[bad[0]]:#x}, "
                                  f"written {rows[bad[0]]:#x} ({len(bad)} rows differ after "
                                  f"a rewrite)")

    def _bar(self, reqs: list[_Request], desc: str, unit: str = "B"):
        total = sum(r.weight for r in reqs)
        if not self.progress or total == 0:
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", leave=False)

    # -- the link ------------------------------------------------------------------------

    def _line_time(self, nbytes: int) -> float:
        return nbytes * BITS_PER_BYTE / self.baudrate

    def _quiet_time(self) -> float:
        """How long to stay silent before a resend after a timeout, so that the device
        has dropped a partial frame (its ``byte_timeout``)."""
        ident = self._identity
        if ident is None:
            return 0.05
        bits = ident.byte_timeout / max(ident.divisor, 1)
        return min(1.0, max(0.02, 2 * bits / self.baudrate))

    def _next_seq(self, busy: set[int]) -> int:
        for _ in range(256):
            self._seq = (self._seq + 1) & 0xFF
            if self._seq not in busy:
                return self._seq
        raise AssertionError("no free sequence byte")

    def _send(self, req: _Request, inflight: list[_Request]) -> None:
        if req.attempts > self.retries:
            counts = collections.Counter(req.history)
            what = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            raise LinkError(f"{req.label}: no valid reply after {req.attempts} attempts "
                            f"({what}) on {self.url}; the link is too noisy or the device "
                            f"is not a shiftpool device")
        if req.attempts:
            self.stats.retries += 1
        req.attempts += 1
        req.seq = self._next_seq({r.seq for r in inflight if r is not req})
        self._by_seq[req.seq] = req
        frame = encode_frame(int(req.cmd), req.seq, req.payload)
        try:
            self._port.write(frame)
        except (serial.SerialException, OSError) as exc:
            raise LinkError(f"cannot write to {self.url}: {exc}") from None
        self.stats.frames_sent += 1
        self.stats.bytes_sent += len(frame)
        if req.region is not None:
            self.stats.write_bytes[req.region] += len(frame)

    def _deadline(self, req: _Request) -> float:
        line = len(req.payload) + req.reply_size + 2 * FRAME_OVERHEAD
        return time.monotonic() + self.timeout + 1.5 * self._line_time(line)

    def _read(self, wait: float) -> bytes:
        """Bytes from the device: blocks up to ``wait`` s for the first, then takes
        what is there."""
        try:
            self._set_timeout(max(0.0, min(wait, _POLL)))
            data = self._port.read(1)
            if data:
                self._set_timeout(0)
                data += self._port.read(1 << 16)
        except (serial.SerialException, OSError) as exc:
            raise LinkError(f"cannot read from {self.url}: {exc}") from None
        self.stats.bytes_received += len(data)
        return data

    def _set_timeout(self, value: float) -> None:
        if value != self._port_timeout:
            self._port.timeout = value
            self._port_timeout = value

    def _transact(self, requests: list[_Request], window: int = 1, progress=None) -> None:
        """Send ``requests`` with up to ``window`` in flight until each has a valid
        reply (:meth:`_Request.answer`)."""
        pending = collections.deque(requests)
        inflight: list[_Request] = []
        deadline = 0.0
        silent = 0              # timeouts in a row without a byte in between
        heard = self.stats.bytes_received
        try:
            while pending or inflight:
                while pending and len(inflight) < window:
                    req = pending.popleft()
                    if req.split is not None and req.size > self._frame_limit:
                        self._split(req, pending)
                        continue
                    self._send(req, inflight)
                    inflight.append(req)
                    if len(inflight) == 1:
                        deadline = self._deadline(req)
                if not inflight:
                    continue
                head = inflight[0]
                data = self._read(deadline - time.monotonic())
                for event in self._decoder.feed_bytes(data):
                    self._handle(event, inflight, pending, progress)
                if not inflight:
                    continue
                if inflight[0] is not head:
                    deadline = self._deadline(inflight[0])
                elif time.monotonic() > deadline:
                    self.stats.timeouts += 1
                    self._decoder.expire()
                    silent = silent + 1 if self.stats.bytes_received == heard else 1
                    heard = self.stats.bytes_received
                    if silent >= DEAD_AFTER:
                        raise LinkError(f"the device on {self.url} does not answer: not a "
                                        f"byte in {silent} timeouts in a row; is it powered "
                                        f"and programmed, the port and baud rate right, or "
                                        f"the simulated device running?")
                    time.sleep(self._quiet_time())
                    self._retry(head, "timeout", inflight, pending)
                    if inflight:
                        deadline = self._deadline(inflight[0])
        finally:
            if progress is not None:
                progress.close()

    def _split(self, req: _Request, pending) -> None:
        req.parts = req.split()
        pending.extendleft(reversed(req.parts))

    def _retry(self, req: _Request, why: str, inflight: list[_Request], pending) -> None:
        """``req`` failed (``why``): send it again, behind the others in flight (the
        device answers in the order frames arrive), or, after :data:`SPLIT_AFTER`
        failures of a frame of several rows, as two smaller ones and with a lower
        frame size limit."""
        req.history.append(why)
        self._clean = 0
        inflight.remove(req)
        if req.split is not None and req.attempts >= SPLIT_AFTER and req.size > MIN_FRAME:
            self._frame_limit = max(MIN_FRAME, min(self._frame_limit, req.size // 2))
            self.stats.splits += 1
            self._split(req, pending)
            return
        self._send(req, inflight)
        inflight.append(req)

    def _handle(self, event, inflight: list[_Request], pending, progress) -> None:
        if isinstance(event, FrameError):
            self.stats.bad_replies += 1
            req = self._by_seq.get(event.seq)
            if req is not None and req in inflight and event.cmd in (req.cmd | REPLY,
                                                                     Command.NAK):
                self._retry(req, f"bad reply ({event.reason.name})", inflight, pending)
            return
        assert isinstance(event, Frame)
        req = self._by_seq.get(event.seq)
        if req is None or req not in inflight:
            self.stats.stale_replies += 1
            return
        if event.cmd == Command.NAK:
            try:
                reason, cmd = parse_nak(event.payload)
            except ValueError:
                self.stats.bad_replies += 1
                return
            if reason in _AFTER_CRC and cmd != req.cmd:
                self.stats.stale_replies += 1     # not a NAK of our (undamaged) frame
                return
            self.stats.naks[reason.name] += 1
            if reason not in RETRYABLE:
                raise DeviceError(f"{req.label}: the device refused it ({reason.name})")
            if reason == Reason.BUSY:
                time.sleep(0.01)
            self._retry(req, f"NAK {reason.name}", inflight, pending)
            return
        if event.cmd != req.cmd | REPLY:
            self.stats.stale_replies += 1
            return
        if not req.check(event.payload):
            self.stats.bad_replies += 1
            self._retry(req, "malformed reply", inflight, pending)
            return
        req.reply = event.payload
        inflight.remove(req)
        self.stats.requests += 1
        self._clean += 1
        if self._clean >= GROW_AFTER and self._identity is not None:
            self._frame_limit = min(2 * self._frame_limit, self._identity.max_payload)
            self._clean = 0
        if progress is not None:
            progress.update(req.weight)


def _empty(payload: bytes) -> bool:
    return payload == b""


def _parses(parse) -> Callable[[bytes], bool]:
    def check(payload: bytes) -> bool:
        try:
            parse(payload)
        except ValueError:
            return False
        return True
    return check


def _no_delay(port) -> None:
    """Send small frames at once on a ``socket://`` port (no Nagle delay): with two
    requests in flight, a frame held back leaves the line idle."""
    import socket

    sock = getattr(port, "_socket", None)
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
