"""Tang Nano 9K (GW1NR-LV9QN88PC6/I5): the 27 MHz oscillator clocks the design
directly; the UART is the on-board BL702 USB bridge. LEDs 0, 1, 2: loaded, running,
error.

Built with the PyPI Gowin flow: yosys ``synth_gowin``, nextpnr-himbaechel (Gowin
arch) and apycula's ``gowin_pack``.
"""


from .board import Board

__all__ = ["BOARD"]

BOARD = Board(
    name="tangnano9k",
    title="Tang Nano 9K (GW1NR-9C)",
    family="gowin",
    platform="amaranth_boards.tang_nano_9k:TangNano9kPlatform",
    nextpnr_args=("--device", "GW1NR-LV9QN88PC6/I5", "--vopt", "family=GW1N-9C"),
    clock_hz=27e6,
    pll=False,
    uart=("uart", 0),
    leds={"loaded": ("led", 0), "running": ("led", 1), "error": ("led", 2)},
    programmers=(("openFPGALoader", "-b", "tangnano9k", "{bitstream}"),),
    bitstream="top.fs",
)
