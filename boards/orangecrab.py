"""OrangeCrab r0.2 85F (LFE5U-85F-8MG285): the 48 MHz oscillator clocks the design
directly. The board has no USB serial bridge: the UART is on the Feather header pins
0 (RX, from the host) and 1 (TX), for a 3.3 V USB-serial adapter. The RGB LED shows
loaded (green), running (blue) and error (red)."""

from .board import Board

__all__ = ["BOARD"]


def _add_header_uart(platform) -> None:
    from amaranth.build import Attrs
    from amaranth_boards.resources import UARTResource

    platform.add_resources([UARTResource(0, rx="0", tx="1", conn=("io", 0),
                                         attrs=Attrs(IO_TYPE="LVCMOS33", PULLMODE="UP"))])


BOARD = Board(
    name="orangecrab-85f",
    title="OrangeCrab r0.2 85F (LFE5U-85F)",
    family="ecp5",
    platform="amaranth_boards.orangecrab_r0_2:OrangeCrabR0_2_85FPlatform",
    extra_resources=_add_header_uart,
    nextpnr_args=("--85k", "--package", "CSFBGA285", "--speed", "8"),
    clock_hz=48e6,
    pll=False,
    uart=("uart", 0),
    leds={"loaded": ("rgb_led", 0, "g"), "running": ("rgb_led", 0, "b"),
          "error": ("rgb_led", 0, "r")},
    # The DFU bootloader takes the bitstream over USB (hold the button at power-up).
    programmers=(("openFPGALoader", "-b", "orangecrab", "{bitstream}"),
                 ("dfu-util", "-a", "0", "-D", "{bitstream}")),
    bitstream="top.bit",
)
