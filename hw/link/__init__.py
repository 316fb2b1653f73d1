"""shiftpool.hw.link: the host link in gateware.

UART (:mod:`.uart`) -> frames with CRC-16 (:mod:`.framing`) -> the command handler
(:mod:`.handler`) on the accelerator's ports; :mod:`.link` puts them together,
:mod:`.protocol` holds the numbers a host shares with it, and ``docs/protocol.md``
describes the bytes.

:mod:`.config` and :mod:`.protocol` need no amaranth (the host driver imports them);
the gateware classes are imported from :mod:`.link` when first used.
"""

from .config import LinkConfig

__all__ = ["LinkConfig", "LinkCore", "UARTLink", "attach_accelerator"]

_GATEWARE = ("LinkCore", "UARTLink", "attach_accelerator")


def __getattr__(name):
    if name in _GATEWARE:
        from . import link

        return getattr(link, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
