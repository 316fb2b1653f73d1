"""iCEBreaker (iCE40UP5K-SG48): 12 MHz oscillator, PLL to 19.5 MHz, the FTDI UART.

LEDs: red (on the board) shows an error, green (on the board) a running inference,
and the middle green LED of the snap-off LED/button PMOD (in PMOD2) a loaded model.

Engine size and clock, measured on the digits demo with the weights in SPRAM
(``python -m shiftpool.boards.report --boards icebreaker --sizes 2x2,2x4``):

* 2 lanes x 4 taps does not fit: FLightNN needs 5397 of the 5280 logic cells (int8
  fits: 4662 cells, 29 of 30 block RAMs, all 4 SPRAMs, all 8 DSPs);
* 2 lanes x 2 taps fits both with room, so it is the default: FLightNN 4675 logic
  cells, 24 block RAMs, 2 SPRAMs; int8 4375 cells, 23 block RAMs, 2 SPRAMs, 4 DSPs.
* Fmax at 2x2 is 21.8 MHz (FLightNN) and 21.5 MHz (int8); 1x2 reaches 21.8 and 25.3.
  The longest paths are in the accelerator's controller (the write-back unit's ready
  into the issue pipeline, the group-end compare chain) and the shift-add engine,
  no longer in the link, the requantizer or the memories. Hence 19.5 MHz (an exact
  PLL setting, about 10% below both) until those paths are shortened; 24 MHz is
  the goal.
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
    clock_hz=19.5e6,
    pll=True,
    uart=("uart", 0),
    leds={"loaded": ("led", 2), "running": ("led", 1), "error": ("led", 0)},
    programmers=(("iceprog", "{bitstream}"), ("openFPGALoader", "-b", "ice40_generic",
                                                 "{bitstream}")),
    bitstream="top.bin",
    # 512 bytes fill one 512x8 block RAM; the 1024 default would take two. 8-bit
    # STATUS counters (saturating at 255) leave logic cells to the accelerator.
    link_fields={"max_payload": 512, "counter_bits": 8},
    engine_size=(2, 2),
)
