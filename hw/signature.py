"""The accelerator's ports: one signature for the accelerator, the link and the device.

The accelerator has ``AcceleratorSignature(config)``; the link faces it with the same
signature flipped (``In(AcceleratorSignature(config))``), and one ``wiring.connect``
joins them (:func:`~shiftpool.hw.link.link.attach_accelerator`).
"""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .link.protocol import row_bytes
from .memory_map import load_addr_width, load_data_width
from .program import REGIONS, count_width

__all__ = [
    "AcceleratorSignature", "input_layout", "load_layout", "output_layout",
    "readback_request_layout", "readback_signature",
]


def load_layout(config: AcceleratorConfig) -> data.StructLayout:
    """Payload of the ``load`` stream: which region (its code in ``REGIONS``), which
    row, the row's bits (zero-extended to the widest region)."""
    return data.StructLayout({
        "region": unsigned(count_width(len(REGIONS) - 1)),
        "addr": unsigned(load_addr_width(config)),
        "data": unsigned(load_data_width(config)),
    })


def input_layout(config: AcceleratorConfig) -> data.StructLayout:
    """Payload of the ``inp`` stream: one unsigned activation; ``last`` on the final
    word of the input feature map."""
    return data.StructLayout({"data": unsigned(config.act_bits), "last": 1})


def output_layout(config: AcceleratorConfig) -> data.StructLayout:
    """Payload of the ``out`` stream: one output (accumulator plus bias); ``last`` on
    the final one."""
    return data.StructLayout({"data": signed(config.acc_width), "last": 1})


def readback_request_layout(config: AcceleratorConfig) -> data.StructLayout:
    """A readback request: the region code and row, shaped as on the ``load`` port,
    and which byte of the row (``row_bytes`` of the widest region)."""
    load = load_layout(config)
    return data.StructLayout({"region": load["region"].shape, "addr": load["addr"].shape,
                              "byte": unsigned(count_width(row_bytes(load_data_width(config))
                                                           - 1))})


def readback_signature(config: AcceleratorConfig) -> wiring.Signature:
    """The readback port, seen from the reader (the link's command handler).

    Members
    -------
    req : Out(stream.Signature(readback_request_layout(config)))
        One request per byte: ``region`` (code in ``REGIONS``), ``addr`` (row),
        ``byte`` (byte ``k`` is bits ``8k .. 8k + 7`` of the row).
    resp : In(stream.Signature(8))
        One response per request, in request order: that byte of the row, zero
        above the region's width.

    The accelerator takes requests while idle (``busy`` low); it may take any number
    of cycles to answer, but must answer every request it took. Bytes, not rows,
    cross the port: the byte is picked where the rows are, and the link needs no
    row-wide multiplexer.
    """
    return wiring.Signature({
        "req": Out(stream.Signature(readback_request_layout(config))),
        "resp": In(stream.Signature(8)),
    })


class AcceleratorSignature(wiring.Signature):
    """The ports of an accelerator, seen from the accelerator.

    Parameters
    ----------
    config : AcceleratorConfig
        Sets every width.

    Members
    -------
    load : In(stream.Signature(load_layout(config)))
        Writes one row of a region; taken only while idle. ``data`` bits above the
        addressed region's width are ignored.
    inp : In(stream.Signature(input_layout(config)))
        The input feature map, ``C*H*W`` words in CHW order; the word with ``last``
        starts the inference. Taken only while idle.
    out : Out(stream.Signature(output_layout(config)))
        The final layer's outputs, in channel order.
    readback : In(readback_signature(config))
        Reads rows of the load regions back while idle.
    cycles : Out(config.cycle_bits)
        Cycles the last inference's program took; valid while ``busy`` is low.
    busy : Out(1)
        An inference is running or its outputs are being sent.
    """

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        self._config = config
        super().__init__({
            "load": In(stream.Signature(load_layout(config))),
            "inp": In(stream.Signature(input_layout(config))),
            "out": Out(stream.Signature(output_layout(config))),
            "cycles": Out(config.cycle_bits),
            "busy": Out(1),
            "readback": In(readback_signature(config)),
        })

    @property
    def config(self) -> AcceleratorConfig:
        """The configuration the ports are sized for."""
        return self._config

    def __eq__(self, other):
        return type(other) is type(self) and self._config == other._config

    def __hash__(self):
        return hash((type(self), self._config))

    def __repr__(self):
        return f"AcceleratorSignature({self._config!r})"
