"""iCEBreaker (iCE40UP5K-SG48): 12 MHz oscillator, PLL to 24 MHz, the FTDI UART.

LEDs: red (on the board) shows an error, green (on the board) a running inference,
and the middle green LED of the snap-off LED/button PMOD (in PMOD2) a loaded model.

Engine size and clock, measured on the digits demo with the weights in SPRAM
(``python -m shiftpool.boards.report --boards icebreaker --fit``, README's board
section):

* FLightNN and LightNN-2: 2 lanes x 2 taps is the largest that fits at 24 MHz
  (FLightNN 4632 logic cells, 23 block RAMs, 2 SPRAMs, 27.8 MHz); 2 x 4, 4 x 2 and
  8 x 1 miss the 5280 logic cells (FLightNN 5318, 5360, 6094), 1 x 4 the clock
  (23.5 MHz);
* int8: 2 x 4 fits (4579 cells, 27 block RAMs, all 4 SPRAMs, all 8 DSPs, 28.6 MHz);
* the default stays 2 x 2, the size both shift-add schemes and int8 fit; the
  weight-pool engine fits at no size (at 1 lane x 8 taps the memory estimate asks
  for 5 SPRAMs and 46 block RAMs).
* Fmax is about 28 MHz against the 24 MHz target, since the controller registers the
  gathered activations before the engine, the write-back's bias add and requantizer
  results, the loop ends and the write-back's last-lane flag, and the readback
  request.
"""


from .board import Board

__all__ = ["BOARD"]


def _add_break_off_pmod(platform) -> None:
    platform.add_resources(platform.break_off_pmod)


BOARD = Board(
    name="icebreaker",
    title="iCEBreaker (iCE40UP5K)",
    family="ice40",
    platform="amaranth_boards.icebreaker:ICEBreakerPlatform",
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
    engine_size=(2, 2),
)
