"""Frames of the host link in Python: the reference of the gateware frame decoder and
encoder (``shiftpool.hw.link.framing``), and what a host driver sends and parses.

``docs/protocol.md`` defines the bytes. Time enters the decoder only as the idle gap
before a byte, counted in the same unit as ``timeout`` (clock cycles for the
gateware reference, anything consistent for a host).
"""

from __future__ import annotations

import dataclasses

from ...hw.link.protocol import HEADER_BYTES, LENGTH_BITS, SYNC, TRAILER_BYTES, Reason
from .crc import crc16

__all__ = ["FRAME_OVERHEAD", "Frame", "FrameDecoder", "FrameError", "encode_frame"]

_MAX_LENGTH = (1 << LENGTH_BITS) - 1
#: Bytes of a frame besides its payload.
FRAME_OVERHEAD = HEADER_BYTES + TRAILER_BYTES


def encode_frame(cmd: int, seq: int, payload: bytes = b"") -> bytes:
    """The bytes of one frame."""
    if not 0 <= cmd <= 0xFF or not 0 <= seq <= 0xFF:
        raise ValueError(f"command {cmd} and sequence {seq} must be bytes")
    if len(payload) > _MAX_LENGTH:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {_MAX_LENGTH}")
    body = bytes([cmd, seq]) + len(payload).to_bytes(2, "little") + bytes(payload)
    return bytes([SYNC]) + body + crc16(body).to_bytes(2, "big")


@dataclasses.dataclass(frozen=True)
class Frame:
    """A frame that passed every check."""

    cmd: int
    seq: int
    payload: bytes


@dataclasses.dataclass(frozen=True)
class FrameError:
    """A dropped frame: why, and the header fields that had arrived (0 if not)."""

    reason: Reason
    cmd: int
    seq: int
    length: int


class FrameDecoder:
    """Byte-at-a-time frame decoder with the gateware decoder's exact behaviour.

    Parameters
    ----------
    max_payload : int
        Largest accepted length.
    timeout : int or None
        A partial frame is dropped when a byte arrives after an idle gap of at least
        this many units (or on :meth:`expire`); ``None``: never by gap.
    """

    def __init__(self, max_payload: int, timeout: int | None = None):
        self.max_payload = max_payload
        self.timeout = timeout
        self._state = "HUNT"
        self._fields = {"cmd": 0, "seq": 0, "length": 0}
        self._payload = bytearray()
        self._crc_bytes = bytearray()

    @property
    def in_frame(self) -> bool:
        """A sync byte has arrived and its frame has not ended."""
        return self._state != "HUNT"

    def _drop(self, reason: Reason) -> FrameError:
        self._state = "HUNT"
        return FrameError(reason, **self._fields)

    def expire(self) -> list:
        """The idle timeout has passed: drop a partial frame."""
        return [self._drop(Reason.TIMEOUT)] if self.in_frame else []

    def feed(self, byte: int, gap: int = 0) -> list:
        """Events (:class:`Frame` or :class:`FrameError`) caused by ``byte`` arriving
        after ``gap`` idle units."""
        events = []
        if self.in_frame and self.timeout is not None and gap >= self.timeout:
            events += self.expire()
        state = self._state
        if state == "HUNT":
            if byte == SYNC:
                self._fields = {"cmd": 0, "seq": 0, "length": 0}
                self._payload = bytearray()
                self._crc_bytes = bytearray()
                self._state = "CMD"
        elif state == "CMD":
            self._fields["cmd"] = byte
            self._state = "SEQ"
        elif state == "SEQ":
            self._fields["seq"] = byte
            self._state = "LEN0"
        elif state == "LEN0":
            self._fields["length"] = byte
            self._state = "LEN1"
        elif state == "LEN1":
            length = self._fields["length"] | byte << 8
            self._fields["length"] = length
            if length > self.max_payload:
                events.append(self._drop(Reason.BAD_LENGTH))
            else:
                self._state = "DATA" if length else "CRC"
        elif state == "DATA":
            self._payload.append(byte)
            if len(self._payload) == self._fields["length"]:
                self._state = "CRC"
        else:
            self._crc_bytes.append(byte)
            if len(self._crc_bytes) == 2:
                f = self._fields
                body = (bytes([f["cmd"], f["seq"]]) + f["length"].to_bytes(2, "little")
                        + bytes(self._payload))
                if crc16(body) == int.from_bytes(self._crc_bytes, "big"):
                    self._state = "HUNT"
                    events.append(Frame(f["cmd"], f["seq"], bytes(self._payload)))
                else:
                    events.append(self._drop(Reason.BAD_CRC))
        return events

    def feed_bytes(self, data: bytes) -> list:
        """Events of ``data`` arriving without gaps."""
        events = []
        for byte in data:
            events += self.feed(byte)
        return events
