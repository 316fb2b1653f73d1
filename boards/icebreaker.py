"""iCEBreaker (iCE40UP5K-SG48): 12 MHz oscillator, PLL to 24 MHz, the FTDI UART.

LEDs: red (on the board) shows an error, green (on the board) a running inference,
and the middle green LED of the snap-off LED/button PMOD (in PMOD2) a loaded model.
"""

from amaranth_boards.icebreaker import ICEBreakerPlatform

from .board import Board

__all__ = ["BOARD"]


def _add_break_off_pmod(platform) -> None:
    platform.add_resources(platform.break_off_pmod)


BOARD = Board(
    name="icebreaker",
    title="iCEBreaker (iCE40UP5K)",
    family="ice40",
    platform=ICEBreakerPlatform,
    extra_resources=_add_break_off_pmod,
    nextpnr_args=("--up5k", "--package", "sg48"),
    clock_hz=24e6,
    pll=True,
    uart=("uart", 0),
    leds={"loaded": ("led", 2), "running": ("led", 1), "error": ("led", 0)},
    programmers=(("iceprog", "{bitstream}"), ("openFPGALoader", "-b", "ice40_generic",
                                                 "{bitstream}")),
    bitstream="top.bin",
    # 512 bytes fill one 512x8 block RAM; the 1024 default would take two. 8-bit
    # STATUS counters (saturating at 255) leave logic cells to the accelerator.
    link_fields={"max_payload": 512, "counter_bits": 8},
)
