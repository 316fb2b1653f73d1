"""The whole host link: a UART (or any byte stream), frames and the command handler,
and how an accelerator is attached to it."""

from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import AcceleratorConfig
from ..signature import AcceleratorSignature
from .config import LinkConfig
from .framing import FrameDecoder, FrameEncoder, reply_payload_layout
from .handler import CommandHandler
from .uart import UARTReceiver, UARTTransmitter

__all__ = ["LinkCore", "UARTLink", "attach_accelerator"]


def _register_stream(m, source, sink, shape):
    """Connect stream ``source`` to stream ``sink`` through a one-entry register that
    takes a beat only when empty: no combinational path between them, in either
    direction, at half the full rate (the UART is far slower than that)."""
    beat = Signal(shape, reset_less=True)
    full = Signal()
    m.d.comb += [source.ready.eq(~full), sink.valid.eq(full), sink.payload.eq(beat)]
    with m.If(sink.ready):
        m.d.sync += full.eq(0)
    with m.If(source.valid & ~full):
        m.d.sync += [beat.eq(source.payload), full.eq(1)]


def _accelerator_members(config: AcceleratorConfig) -> dict:
    """The members of a link that face the accelerator."""
    return {"accelerator": In(AcceleratorSignature(config)), "accel_reset": Out(1)}


def _forward(m, outer, inner):
    """Connect ``inner``'s accelerator ports to the same ports of the component
    ``outer`` that contains it."""
    wiring.connect(m, wiring.flipped(outer.accelerator), inner.accelerator)
    m.d.comb += outer.accel_reset.eq(inner.accel_reset)


class LinkCore(wiring.Component):
    """Frame decoder, command handler and frame encoder over a byte stream.

    Parameters
    ----------
    config : AcceleratorConfig
    link : LinkConfig
        ``max_payload``, ``byte_timeout`` and ``run_timeout`` are used here.
    config_hash : str, optional
        What IDENTIFY reports (``config.hash`` by default).

    Members
    -------
    i : In(stream.Signature(8))
        Bytes from the host.
    o : Out(stream.Signature(8))
        Bytes to the host.
    rx_framing_error, rx_overrun : In(1)
        Strobes of the byte source, counted for STATUS (tie to 0 if there are none).
    accelerator : In(AcceleratorSignature(config))
        The accelerator's ports, flipped (:class:`~shiftpool.hw.signature.AcceleratorSignature`).
    accel_reset : Out(1)
        Resets the accelerator (:class:`~shiftpool.hw.link.handler.CommandHandler`).
    """

    def __init__(self, config: AcceleratorConfig, link: LinkConfig,
                 config_hash: str | None = None):
        self.config = config
        self.link = link
        self._handler = CommandHandler(config, link, config_hash)
        super().__init__({
            "i": In(stream.Signature(8)),
            "o": Out(stream.Signature(8)),
            "rx_framing_error": In(1),
            "rx_overrun": In(1),
            **_accelerator_members(config),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.decoder = decoder = FrameDecoder(self.link.max_payload,
                                                      self.link.byte_timeout)
        m.submodules.handler = handler = self._handler
        m.submodules.encoder = encoder = FrameEncoder(self.link.max_payload)
        wiring.connect(m, wiring.flipped(self.i), decoder.i)
        wiring.connect(m, decoder.event, handler.event)
        wiring.connect(m, decoder.payload, handler.payload)
        wiring.connect(m, handler.reply_header, encoder.header)
        # Registered: a reply byte is picked by the handler's multiplexer (its
        # reply memory, the readback port, the bytes of STATUS, RUN's cycles and
        # NAKs), and the encoder runs it through its CRC in the same cycle otherwise.
        _register_stream(m, handler.reply_payload, encoder.payload, reply_payload_layout())
        wiring.connect(m, encoder.o, wiring.flipped(self.o))
        m.d.comb += [handler.rx_framing_error.eq(self.rx_framing_error),
                     handler.rx_overrun.eq(self.rx_overrun)]
        _forward(m, self, handler)
        return m


class UARTLink(wiring.Component):
    """The host link on a UART: receiver, receive FIFO, :class:`LinkCore`, transmitter.

    Parameters
    ----------
    config : AcceleratorConfig
    link : LinkConfig
    config_hash : str, optional

    Members
    -------
    rx : In(1)
        The UART line from the host (idle high, asynchronous).
    tx : Out(1)
        The UART line to the host (idle high).
    accelerator : In(AcceleratorSignature(config))
        The accelerator's ports, flipped (:class:`~shiftpool.hw.signature.AcceleratorSignature`).
    accel_reset : Out(1)
        Resets the accelerator (:class:`~shiftpool.hw.link.handler.CommandHandler`).
    """

    def __init__(self, config: AcceleratorConfig, link: LinkConfig,
                 config_hash: str | None = None):
        self.config = config
        self.link = link
        self._core = LinkCore(config, link, config_hash)
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            **_accelerator_members(config),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = rx = UARTReceiver(self.link.divisor)
        m.submodules.uart_tx = tx = UARTTransmitter(self.link.divisor)
        m.submodules.rx_fifo = rx_fifo = fifo.SyncFIFOBuffered(width=8,
                                                               depth=self.link.rx_fifo_depth)
        m.submodules.core = core = self._core
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx)]
        wiring.connect(m, rx.o, rx_fifo.w_stream)
        wiring.connect(m, rx_fifo.r_stream, core.i)
        # Registered, so that the encoder's output multiplexer does not end in the
        # transmitter's shift register; the transmitter takes the next byte in the
        # last cycle of a stop bit, so the line stays full.
        _register_stream(m, core.o, tx.i, 8)
        m.d.comb += [core.rx_framing_error.eq(rx.framing_error),
                     core.rx_overrun.eq(rx.overrun)]
        _forward(m, self, core)
        return m


def attach_accelerator(m: Module, link, accelerator, name: str = "accelerator"):
    """Add ``accelerator`` to ``m`` under ``name``, reset by the link's
    ``accel_reset`` (through a register: one cycle after the pulse), and connect its
    ports to ``link.accelerator`` (``link`` is a :class:`UARTLink`, :class:`LinkCore` or
    :class:`~shiftpool.hw.link.handler.CommandHandler`).

    The accelerator has the members of
    :class:`~shiftpool.hw.signature.AcceleratorSignature` (and may have more).
    """
    # Registered: the handler's pulse is decoded from its state and its watchdog, and
    # would otherwise reach every flip-flop of the accelerator in the same cycle (the
    # longest path of small designs). The handler does not touch the accelerator's
    # ports in the cycle after a pulse, so a reset one cycle later changes nothing.
    reset = Signal(name=f"{name}_reset")
    m.d.sync += reset.eq(link.accel_reset)
    m.submodules[name] = ResetInserter({"sync": reset})(accelerator)
    wiring.connect(m, link.accelerator, accelerator)
