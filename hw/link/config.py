"""Parameters of the host link, one frozen object for the UART, the frame layer and
the command handler."""

from __future__ import annotations

import dataclasses

from ..config import ConfigError

__all__ = ["LinkConfig"]

#: Largest value of a field that IDENTIFY reports in 32 bits.
_U32 = (1 << 32) - 1
#: Bits on the line per byte: start, 8 data, stop.
BITS_PER_BYTE = 10
#: Largest relative baud error :meth:`LinkConfig.for_baud` accepts.
MAX_BAUD_ERROR = 0.02


def _check(name: str, value, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"link config field {name!r} must be an integer, not {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"link config field {name!r} = {value} is out of range; "
                          f"allowed: {lo}..{hi}")


@dataclasses.dataclass(frozen=True)
class LinkConfig:
    """How the accelerator talks to the host.

    Parameters
    ----------
    divisor : int
        Clock cycles per UART bit (``clock / baud``), at least 4 so that the receiver
        can sample the middle of a bit and reject glitches.
    max_payload : int
        Largest frame payload, in bytes, in either direction; also the size of the
        frame decoder's buffer. At least 64 (the IDENTIFY reply), at most 65535 (the
        length field).
    byte_timeout : int
        Cycles without a byte after which the frame decoder drops a partial frame.
        At least two character times (``20 * divisor``).
    run_timeout : int
        Cycles the command handler waits for the accelerator to take or give one
        beat (a row, an input word, an output word, a readback row) before it resets
        the accelerator and answers with a NAK.
    rx_fifo_depth : int
        Bytes buffered between the UART receiver and the frame decoder, which does
        not take bytes while the handler has not yet read the previous frame.
    counter_bits : int
        Width of each STATUS counter (1 to 16): they saturate at ``2**counter_bits -
        1`` and are sent as 16 bits whatever their width. The counters are kept in a
        block RAM with one shared incrementer, so the width costs little (8 bits on
        the iCEBreaker save about 30 cells against 16).
    """

    divisor: int = 104
    max_payload: int = 1024
    byte_timeout: int = 240_000
    run_timeout: int = 1 << 24
    rx_fifo_depth: int = 32
    counter_bits: int = 16

    def __post_init__(self):
        _check("divisor", self.divisor, 4, 1 << 24)
        _check("max_payload", self.max_payload, 64, 0xFFFF)
        _check("byte_timeout", self.byte_timeout, 2 * BITS_PER_BYTE * self.divisor, _U32)
        _check("run_timeout", self.run_timeout, 1, _U32)
        _check("rx_fifo_depth", self.rx_fifo_depth, 2, 1 << 16)
        _check("counter_bits", self.counter_bits, 1, 16)

    @classmethod
    def for_baud(cls, clock_hz: float, baud: float, *, timeout_s: float = 0.02,
                 **fields) -> LinkConfig:
        """The config for a clock and a baud rate; ``timeout_s`` becomes
        ``byte_timeout`` (at least two character times)."""
        if clock_hz <= 0 or baud <= 0:
            raise ConfigError(f"clock {clock_hz} Hz and baud {baud} must be positive")
        divisor = round(clock_hz / baud)
        if divisor < 1 or abs(clock_hz / divisor - baud) > MAX_BAUD_ERROR * baud:
            raise ConfigError(f"baud {baud} cannot be made from a {clock_hz} Hz clock within "
                              f"{MAX_BAUD_ERROR:.0%}; pick another baud rate")
        timeout = max(2 * BITS_PER_BYTE * divisor, round(timeout_s * clock_hz))
        return cls(divisor=divisor, byte_timeout=timeout, **fields)

    def baud(self, clock_hz: float) -> float:
        """The line rate this config gives with a ``clock_hz`` clock."""
        return clock_hz / self.divisor

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)
