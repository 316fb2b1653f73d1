"""ULX3S 85F (LFE5U-85F-6BG381): 25 MHz oscillator, PLL to 40 MHz, the FTDI UART
(the USB port marked US1). LEDs 0, 1, 2: loaded, running, error."""


from .board import Board

__all__ = ["BOARD"]

BOARD = Board(
    name="ulx3s-85f",
    title="ULX3S 85F (LFE5U-85F)",
    family="ecp5",
    platform="amaranth_boards.ulx3s:ULX3S_85F_Platform",
    nextpnr_args=("--85k", "--package", "CABGA381", "--speed", "6"),
    clock_hz=40e6,
    pll=True,
    uart=("uart", 0),
    leds={"loaded": ("led", 0), "running": ("led", 1), "error": ("led", 2)},
    programmers=(("openFPGALoader", "-b", "ulx3s", "{bitstream}"),),
    bitstream="top.bit",
)
