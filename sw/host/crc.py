"""CRC-16/CCITT-FALSE, the check sum of the host link's frames.

The variant (also catalogued as CRC-16/IBM-3740 and CRC-16/AUTOSAR): polynomial
``0x1021``, initial value ``0xFFFF``, input and output not reflected, no final XOR.
Its check value, the CRC of the ASCII bytes ``b"123456789"``, is ``0x29B1``.

This is the reference the gateware CRC (:func:`shiftpool.hw.link.framing.frame_crc`,
``amaranth.lib.crc``'s ``CRC16_CCITT_FALSE``) is tested against. Because nothing is
reflected or XORed at the end, running the CRC over a message followed by its CRC sent
most significant byte first gives 0, which is how the frame decoder checks a frame.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable

__all__ = ["CHECK", "INIT", "NAME", "POLY", "crc16"]

#: Name of the variant in the reveng CRC catalogue's older spelling.
NAME = "CRC-16/CCITT-FALSE"
#: Generator polynomial (``x^16 + x^12 + x^5 + 1``), without the ``x^16`` term.
POLY = 0x1021
#: Register value before the first byte.
INIT = 0xFFFF
#: ``crc16(b"123456789")``.
CHECK = 0x29B1


def crc16(data: bytes | Iterable[int], crc: int = INIT) -> int:
    """CRC-16/CCITT-FALSE of ``data``; pass ``crc`` to continue an earlier CRC.

    The standard library has it: ``binascii.crc_hqx`` is this CRC (polynomial
    ``0x1021``, MSB first, no reflection, no final XOR) from a given start value.
    """
    return binascii.crc_hqx(bytes(data), crc)
