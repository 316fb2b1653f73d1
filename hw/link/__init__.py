"""shiftpool.hw.link: the host link in gateware.

UART (:mod:`.uart`) -> frames with CRC-16 (:mod:`.framing`, :mod:`.crc`) -> the
command handler (:mod:`.handler`) on the accelerator's ports; :mod:`.link` puts them
together, :mod:`.protocol` holds the numbers a host shares with it, and
``docs/protocol.md`` describes the bytes.
"""

from .config import LinkConfig
from .link import LinkCore, UARTLink, attach_accelerator

__all__ = ["LinkConfig", "LinkCore", "UARTLink", "attach_accelerator"]
