"""The device: the UART host link in front of one accelerator.

This is what a board top instantiates (with its clock and its UART pins) and what the
simulated device (:mod:`shiftpool.sim.serve`) runs: two pins, ``uart_rx`` and
``uart_tx``, carry the frames of ``docs/protocol.md``.
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .accelerator import Accelerator
from .config import AcceleratorConfig
from .link import LinkConfig, UARTLink, attach_accelerator

__all__ = ["Device"]


class Device(wiring.Component):
    """A UART link (:class:`~shiftpool.hw.link.link.UARTLink`) in front of an
    :class:`~shiftpool.hw.accelerator.Accelerator`.

    Parameters
    ----------
    config : AcceleratorConfig
        The accelerator.
    link : LinkConfig
        The UART's divisor, frame sizes and timeouts.
    config_hash : str, optional
        What IDENTIFY reports; ``config.hash`` by default.

    Members
    -------
    uart_rx : In(1)
        The serial line from the host (idle high, asynchronous to the clock).
    uart_tx : Out(1)
        The serial line to the host (idle high).
    """

    def __init__(self, config: AcceleratorConfig, link: LinkConfig | None = None,
                 config_hash: str | None = None):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        link = LinkConfig() if link is None else link
        if not isinstance(link, LinkConfig):
            raise TypeError(f"link must be a LinkConfig, not {link!r}")
        self.config = config
        self.link = link
        self.config_hash = config.hash if config_hash is None else config_hash
        super().__init__({"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = UARTLink(self.config, self.link, self.config_hash)
        attach_accelerator(m, link, Accelerator(self.config))
        m.d.comb += [link.rx.eq(self.uart_rx), self.uart_tx.eq(link.tx)]
        return m
