"""What shiftpool needs to know about a board: one frozen :class:`Board` per board,
built over its amaranth-boards platform.

A board is data (as in amaranth-boards): which platform class, which FPGA family,
the clock it is built for and how that clock is made, which UART and which LEDs
the device uses, and how a bitstream gets onto it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

__all__ = ["BoardError", "Board", "LED_ROLES", "FAMILIES"]

#: What the status LEDs show, in this order.
LED_ROLES = ("loaded", "running", "error")
#: FPGA families the build knows how to place and route.
FAMILIES = ("ice40", "ecp5", "gowin")


class BoardError(ValueError):
    """A board, a build or a programming step that cannot go on; the message is one
    line that names the board, resource, clock or tool at fault."""


@dataclasses.dataclass(frozen=True)
class Board:
    """One supported board.

    Parameters
    ----------
    name : str
        The name ``shiftpool build --board`` takes, e.g. ``"icebreaker"``.
    title : str
        Human-readable name.
    family : str
        One of :data:`FAMILIES`.
    platform : str
        The amaranth-boards platform class, ``"module:Class"``; imported only when a
        platform is made, so the board list needs no toolchain.
    nextpnr_args : tuple of str
        Device and package options of nextpnr for this board's FPGA.
    clock_hz : float
        The clock the device runs at on this board (the build's timing target).
    pll : bool
        Make ``clock_hz`` with the FPGA's PLL from the board oscillator; otherwise the
        oscillator clocks the design directly and ``clock_hz`` must equal its frequency.
    uart : tuple
        ``(resource name, number)`` of the UART the host link uses.
    leds : dict
        Role (``loaded``, ``running``, ``error``) to ``(resource name, number)``, or
        ``(resource name, number, subsignal)`` for one colour of an RGB LED.
    extra_resources : callable, optional
        Adds resources the board carries but its platform does not declare (e.g. a
        UART on header pins); called with the platform.
    link_fields : dict
        :class:`~shiftpool.hw.link.LinkConfig` fields this board sets (e.g. a smaller
        ``max_payload`` where block RAM is scarce).
    engine_size : tuple of int
        ``(lanes, taps)`` a model is built with on this board unless the build says
        otherwise: the largest the demo's FLightNN and int8 designs both fit at
        ``clock_hz`` (see the board's module).
    programmers : tuple of tuple
        Commands that can program the board, tried in order; ``{bitstream}`` stands for
        the file. The first element of each is the tool (and the name of the
        environment variable that overrides it, upper-cased).
    bitstream : str
        File name of the programming file the build writes (``top.bin``, ...).
    """

    name: str
    title: str
    family: str
    platform: str
    nextpnr_args: tuple
    clock_hz: float
    pll: bool
    uart: tuple
    leds: dict
    programmers: tuple
    bitstream: str
    extra_resources: Callable | None = None
    link_fields: dict = dataclasses.field(default_factory=dict)
    engine_size: tuple = (2, 4)

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise BoardError(f"board {self.name!r}: family {self.family!r} is unknown; "
                             f"allowed: {', '.join(FAMILIES)}")
        missing = [role for role in LED_ROLES if role not in self.leds]
        if missing:
            raise BoardError(f"board {self.name!r}: no LED for {', '.join(missing)}")
        if (len(self.engine_size) != 2
                or not all(isinstance(n, int) and n >= 1 for n in self.engine_size)):
            raise BoardError(f"board {self.name!r}: engine_size = {self.engine_size!r} must "
                             f"be (lanes, taps), positive integers")
        if self.clock_hz <= 0:
            raise BoardError(f"board {self.name!r}: clock_hz = {self.clock_hz} must be > 0")

    def _new_platform(self):
        import importlib

        module, _, name = self.platform.partition(":")
        return getattr(importlib.import_module(module), name)()

    def make_platform(self):
        """A fresh platform of this board with the extra resources added."""
        platform = self._new_platform()
        if self.extra_resources is not None:
            self.extra_resources(platform)
        return platform

    @property
    def oscillator_hz(self) -> float:
        """Frequency of the board's default clock."""
        return float(self.make_platform().default_clk_frequency)

    @property
    def device(self) -> str:
        """The FPGA part, as the platform names it."""
        platform = self._new_platform()
        return getattr(platform, "part", None) or platform.device
