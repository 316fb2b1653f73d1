"""CRC-16/CCITT-FALSE, the check sum of the host link's frames.

The variant (also catalogued as CRC-16/IBM-3740 and CRC-16/AUTOSAR): polynomial
``0x1021``, initial value ``0xFFFF``, input and output not reflected, no final XOR.
Its check value, the CRC of the ASCII bytes ``b"123456789"``, is ``0x29B1``.

This is the reference the gateware block :class:`shiftpool.hw.link.crc.CRC16` is
tested against. Because nothing is reflected or XORed at the end, running the CRC
over a message followed by its CRC sent most significant byte first gives 0, which is
how the frame decoder checks a frame.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["CHECK", "INIT", "NAME", "POLY", "crc16", "crc16_update"]

#: Name of the variant in the reveng CRC catalogue's older spelling.
NAME = "CRC-16/CCITT-FALSE"
#: Generator polynomial (``x^16 + x^12 + x^5 + 1``), without the ``x^16`` term.
POLY = 0x1021
#: Register value before the first byte.
INIT = 0xFFFF
#: ``crc16(b"123456789")``.
CHECK = 0x29B1


def _table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ POLY) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_TABLE = _table()


def crc16_update(crc: int, byte: int) -> int:
    """The CRC register after one more ``byte`` (most significant bit first)."""
    return ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]


def crc16(data: bytes | Iterable[int], crc: int = INIT) -> int:
    """CRC-16/CCITT-FALSE of ``data``; pass ``crc`` to continue an earlier CRC."""
    for byte in data:
        crc = crc16_update(crc, byte)
    return crc
