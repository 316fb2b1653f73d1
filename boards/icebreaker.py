"""iCEBreaker (iCE40UP5K-SG48): 12 MHz oscillator, PLL to 19.5 MHz, the FTDI UART.

LEDs: red (on the board) shows an error, green (on the board) a running inference,
and the middle green LED of the snap-off LED/button PMOD (in PMOD2) a loaded model.

Engine size and clock, measured on the digits demo (``python -m
shiftpool.boards.report --boards icebreaker --sizes 1x2,2x2,1x4,2x4``), with the
weights in SPRAM:

* 2 lanes x 4 taps does not fit: FLightNN needs about 5370 of the 5280 logic cells
  (int8 fits, 4650 cells, 29 of 30 block RAMs, all 4 SPRAMs and 8 DSPs);
* 2 lanes x 2 taps fits both with room: FLightNN 4690 logic cells, 24 block RAMs,
  2 SPRAMs; int8 4360 cells, 23 block RAMs, 2 SPRAMs, 4 DSPs. It is the default.
* Fmax at 2x2: FLightNN 22.8 MHz, int8 21.0 MHz (1x2: 21.8 and 25.3), limited by
  the accelerator's controller (write-back ready into the issue pipeline, the
  group-end compare chain) and the shift-add engine, not by the link or the
  memories. Hence 19.5 MHz (an exact PLL setting, 7% below the slower of the two)
  until those paths are shortened; 24 MHz is the goal.
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
