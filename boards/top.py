"""The top of a board build: the board's clock and reset, the device
(:class:`~shiftpool.hw.device.Device`: UART host link plus accelerator) on the
board's UART pins, and three status LEDs.
"""

from __future__ import annotations

from amaranth.hdl import ClockDomain, Elaboratable, Module, Signal
from amaranth.lib import io

from ..hw.config import AcceleratorConfig
from ..hw.device import Device
from ..hw.link import LinkConfig
from .board import LED_ROLES, Board
from .clocks import ClockReset, PLLSettings

__all__ = ["StatusDevice", "BoardTop", "led_ports"]


class StatusDevice(Device):
    """:class:`~shiftpool.hw.device.Device` with the status lines the LEDs show.

    Members (beside the device's ``uart_rx`` and ``uart_tx``; plain signals)
    -------
    loaded : Signal
        Some region row has been written since power-up.
    running : Signal
        The accelerator is busy (an inference runs or its outputs are being sent).
    error : Signal
        The link reset the accelerator (a run that stalled, or the host's RESET)
        since the last run that delivered all its outputs.

    The lines are taken from the ports between the link and the accelerator, which
    the device does not bring out: they are read from its ``link`` submodule.
    """

    def __init__(self, config: AcceleratorConfig, link: LinkConfig | None = None,
                 config_hash: str | None = None):
        super().__init__(config, link, config_hash)
        self.loaded = Signal()
        self.running = Signal()
        self.error = Signal()

    def elaborate(self, platform):
        m = super().elaborate(platform)
        link = m.submodules.link
        ports = link.accelerator
        m.d.comb += self.running.eq(ports.busy)
        with m.If(ports.load.valid & ports.load.ready):
            m.d.sync += self.loaded.eq(1)
        with m.If(link.accel_reset):
            m.d.sync += self.error.eq(1)
        with m.Elif(ports.out.valid & ports.out.ready & ports.out.payload.last):
            m.d.sync += self.error.eq(0)
        return m


class BoardTop(Elaboratable):
    """Everything that goes into one board's bitstream.

    Parameters
    ----------
    board : Board
    config : AcceleratorConfig
    link : LinkConfig
        Its divisor must match ``clock_hz`` and the host's baud rate.
    clock_hz : float
        Frequency of the ``sync`` domain.
    pll : PLLSettings or None
        How ``clock_hz`` is made (``None``: the oscillator directly).
    """

    def __init__(self, board: Board, config: AcceleratorConfig, link: LinkConfig,
                 clock_hz: float, pll: PLLSettings | None):
        self.board = board
        self.config = config
        self.link = link
        self.clock_hz = clock_hz
        self.pll = pll

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd_sync = ClockDomain("sync")
        m.submodules.clocks = clocks = ClockReset(self.board, self.clock_hz, self.pll)
        m.d.comb += [cd_sync.clk.eq(clocks.clk), cd_sync.rst.eq(clocks.rst)]
        m.submodules.device = device = StatusDevice(self.config, self.link)
        uart = platform.request(*self.board.uart, dir="-")
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [device.uart_rx.eq(rx.i), tx.o.eq(device.uart_tx)]
        for role, port in led_ports(platform, self.board).items():
            m.submodules[f"led_{role}"] = led = io.Buffer("o", port)
            m.d.comb += led.o.eq(getattr(device, role))
        return m


def led_ports(platform, board: Board) -> dict:
    """Role -> the I/O port of its LED (one colour of an RGB LED where the board says
    so); each resource is requested once."""
    requested = {}
    ports = {}
    for role in LED_ROLES:
        name, number, *sub = board.leds[role]
        if (name, number) not in requested:
            requested[name, number] = platform.request(name, number, dir="-")
        port = requested[name, number]
        ports[role] = getattr(port, sub[0]) if sub else port
    return ports
