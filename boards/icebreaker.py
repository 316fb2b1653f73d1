"""iCEBreaker (iCE40UP5K-SG48): 12 MHz oscillator, PLL to 24 MHz, the FTDI UART.

LEDs: red (on the board) shows an error, green (on the board) a running inference,
and the middle green LED of the snap-off LED/button PMOD (in PMOD2) a loaded model.

Engine size and clock, measured on 4 December 2026 (``python -m
shiftpool.boards.report --boards icebreaker --fit``, README's board section):

* FLightNN and LightNN-2: 2 lanes x 4 taps is the largest that fits for digits
  (FLightNN 4477 logic cells, 17 block RAMs, 3 SPRAMs, 36.6 MHz; 4 x 4 misses the
  5280 logic cells), 2 x 8 for the MNIST MLP, which has no max-pool unit (4268
  cells, 16 block RAMs, 4 SPRAMs, 36.9 MHz);
* int8: 2 x 4 fits (digits: 4002 cells, 16 block RAMs, all 4 SPRAMs, all 8 DSPs,
  36.2 MHz); a larger int8 engine needs a 128-bit weight row, 8 SPRAMs;
* the weight-pool engine fits at 1 lane x 8 taps (one SPRAM for its table, one for
  the indices: ``hw/spram_choice.py``): digits 5257 cells, 26.4 MHz; MNIST MLP 4556
  cells, 27.7 MHz;
* the default stays 2 x 2, which every shift-add model and int8 fit with room to
  spare; ``--fit`` finds the largest;
* Fmax is 26-37 MHz against the 24 MHz target (the 48 MHz goal is not reached: the
  handshake chains of the link's command handler and the pool engine's stall into
  its table reads are 8-9 LUT levels).
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
