"""The device clock on a board: PLL settings (computed by the IceStorm and Trellis
PLL calculators, ``icepll`` and ``ecppll``) and the clock-and-reset block the board
top makes its ``sync`` domain from.

The reset is held until the PLL has locked and then for
:data:`RESET_DELAY_S` more: iCE40 block RAMs read as zero for a few microseconds
after configuration, and nothing may run before the clock is stable.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from pathlib import Path

from amaranth.hdl import ClockDomain, ClockSignal, Instance, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.wiring import Out

from .board import Board, BoardError
from .tools import run_tool

__all__ = ["PLLSettings", "RESET_DELAY_S", "ClockReset", "ice40_pll", "ecp5_pll", "pll_for"]

#: How long the ``sync`` reset stays asserted after the clock is stable.
RESET_DELAY_S = 20e-6
#: Largest relative difference between the requested and the achieved PLL output.
PLL_TOLERANCE = 0.005


@dataclasses.dataclass(frozen=True)
class PLLSettings:
    """One PLL configuration.

    Members
    -------
    family : str
        ``"ice40"`` or ``"ecp5"``.
    input_hz, output_hz : float
        The reference clock and the output the parameters actually give.
    params : dict
        The primitive's parameters (``DIVR``, ``DIVF``, ... or ``CLKI_DIV``, ...).
    """

    family: str
    input_hz: float
    output_hz: float
    params: dict

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_achieved(tool: str, want_hz: float, got_hz: float) -> None:
    if abs(got_hz - want_hz) > PLL_TOLERANCE * want_hz:
        raise BoardError(f"{tool} cannot make {want_hz / 1e6:g} MHz (closest: "
                         f"{got_hz / 1e6:g} MHz); pick another clock")


def ice40_pll(input_hz: float, output_hz: float) -> PLLSettings:
    """``SB_PLL40_PAD`` settings for ``output_hz`` from ``input_hz``, by ``icepll``."""
    with tempfile.TemporaryDirectory(prefix="shiftpool-icepll-") as tmp:
        proc = run_tool("icepll", ["-i", f"{input_hz / 1e6:g}", "-o", f"{output_hz / 1e6:g}",
                                   "-p"], Path(tmp))
    text = proc.stdout
    fields = dict(re.findall(r"^(DIVR|DIVF|DIVQ|FILTER_RANGE):\s*(\d+)", text, re.M))
    achieved = re.search(r"F_PLLOUT:\s*([\d.]+) MHz \(achieved\)", text)
    if proc.returncode != 0 or len(fields) != 4 or achieved is None:
        raise BoardError(f"icepll found no PLL for {output_hz / 1e6:g} MHz from "
                         f"{input_hz / 1e6:g} MHz: {(proc.stderr or text).strip()[:200]}")
    got = float(achieved.group(1)) * 1e6
    _check_achieved("icepll", output_hz, got)
    params = {"FEEDBACK_PATH": "SIMPLE", **{k: int(v) for k, v in fields.items()}}
    return PLLSettings("ice40", input_hz, got, params)


def ecp5_pll(input_hz: float, output_hz: float) -> PLLSettings:
    """``EHXPLLL`` settings for ``output_hz`` from ``input_hz``, by ``ecppll``."""
    with tempfile.TemporaryDirectory(prefix="shiftpool-ecppll-") as tmp:
        proc = run_tool("ecppll", ["-i", f"{input_hz / 1e6:g}", "-o", f"{output_hz / 1e6:g}",
                                   "-f", "pll.v"], Path(tmp))
        verilog = Path(tmp, "pll.v").read_text() if (Path(tmp) / "pll.v").exists() else ""
    params = {k: int(v) for k, v in
              re.findall(r"\.(CLKI_DIV|CLKOP_DIV|CLKOP_CPHASE|CLKOP_FPHASE|CLKFB_DIV)\((\d+)\)",
                         verilog)}
    achieved = re.search(r"clkout0 frequency:\s*([\d.]+) MHz", proc.stdout)
    if proc.returncode != 0 or len(params) != 5 or achieved is None:
        raise BoardError(f"ecppll found no PLL for {output_hz / 1e6:g} MHz from "
                         f"{input_hz / 1e6:g} MHz: {(proc.stderr or proc.stdout).strip()[:200]}")
    got = float(achieved.group(1)) * 1e6
    _check_achieved("ecppll", output_hz, got)
    return PLLSettings("ecp5", input_hz, got, params)


def pll_for(board: Board, clock_hz: float | None = None) -> PLLSettings | None:
    """The PLL settings that make ``clock_hz`` (the board's clock by default) on
    ``board``; ``None`` when the oscillator clocks the design directly."""
    want = board.clock_hz if clock_hz is None else clock_hz
    osc = board.oscillator_hz
    if not board.pll:
        if abs(want - osc) > PLL_TOLERANCE * osc:
            raise BoardError(f"board {board.name!r} runs from its {osc / 1e6:g} MHz oscillator "
                             f"(no PLL support); {want / 1e6:g} MHz is not available")
        return None
    if board.family == "ice40":
        return ice40_pll(osc, want)
    if board.family == "ecp5":
        return ecp5_pll(osc, want)
    raise BoardError(f"board {board.name!r}: no PLL support for family {board.family!r}")


class ClockReset(wiring.Component):
    """The board's clock and reset: oscillator -> PLL (if any) -> ``clk``, with ``rst``
    held until the clock is stable plus :data:`RESET_DELAY_S`. The parent makes them
    its ``sync`` domain.

    Parameters
    ----------
    board : Board
    clock_hz : float
        Frequency of ``clk`` (the PLL's achieved output, or the oscillator's).
    pll : PLLSettings or None

    Members
    -------
    clk : Out(1)
    rst : Out(1)
        Synchronous to ``clk``.
    """

    def __init__(self, board: Board, clock_hz: float, pll: PLLSettings | None):
        self.board = board
        self.clock_hz = clock_hz
        self.pll = pll
        super().__init__({"clk": Out(1), "rst": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        clk = Signal()
        locked = Signal()
        name = platform.default_clk
        if self.pll is not None and self.pll.family == "ice40":
            # SB_PLL40_PAD takes the pin itself; the pad's global buffer is the PLL's.
            pin = platform.request(name, dir="-")
            p = self.pll.params
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH=p["FEEDBACK_PATH"], p_DIVR=p["DIVR"], p_DIVF=p["DIVF"],
                p_DIVQ=p["DIVQ"], p_FILTER_RANGE=p["FILTER_RANGE"],
                i_PACKAGEPIN=pin.io, i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBAL=clk, o_LOCK=locked)
        else:
            m.submodules.osc = osc = io.Buffer("i", platform.request(name, dir="-"))
            if self.pll is not None and self.pll.family == "ecp5":
                p = self.pll.params
                mhz = f"{self.pll.input_hz / 1e6:g}", f"{self.pll.output_hz / 1e6:g}"
                m.submodules.pll = Instance(
                    "EHXPLLL",
                    a_FREQUENCY_PIN_CLKI=mhz[0], a_FREQUENCY_PIN_CLKOP=mhz[1],
                    a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                    a_MFG_GMCREF_SEL="2",
                    p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                    p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
                    p_OUTDIVIDER_MUXB="DIVB", p_OUTDIVIDER_MUXC="DIVC",
                    p_OUTDIVIDER_MUXD="DIVD", p_CLKI_DIV=p["CLKI_DIV"], p_CLKOP_ENABLE="ENABLED",
                    p_CLKOP_DIV=p["CLKOP_DIV"], p_CLKOP_CPHASE=p["CLKOP_CPHASE"],
                    p_CLKOP_FPHASE=p["CLKOP_FPHASE"], p_FEEDBK_PATH="CLKOP",
                    p_CLKFB_DIV=p["CLKFB_DIV"],
                    i_RST=0, i_STDBY=0, i_CLKI=osc.i, i_CLKFB=clk, i_PHASESEL0=0,
                    i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
                    i_PLLWAKESYNC=0, i_ENCLKOP=0, o_CLKOP=clk, o_LOCK=locked)
            else:
                m.d.comb += [clk.eq(osc.i), locked.eq(1)]

        # The delay counter runs in its own reset-less domain on the same clock and
        # restarts whenever the PLL loses lock.
        m.domains.por = ClockDomain("por", reset_less=True, local=True)
        m.d.comb += [ClockSignal("por").eq(clk), self.clk.eq(clk)]
        delay = max(2, int(RESET_DELAY_S * self.clock_hz))
        timer = Signal(range(delay + 1))
        # The reset is a register (high from configuration on), so that the timer's
        # wide compare does not begin the paths into everything it resets.
        rst = Signal(init=1)
        with m.If(~locked):
            m.d.por += [timer.eq(0), rst.eq(1)]
        with m.Elif(timer != delay):
            m.d.por += [timer.eq(timer + 1), rst.eq(1)]
        with m.Else():
            m.d.por += rst.eq(0)
        m.d.comb += self.rst.eq(rst)
        platform.add_clock_constraint(clk, self.clock_hz)
        return m
