"""Memories with one address for reads and writes, which the iCE40 UltraPlus can hold
in its single-port RAM (SPRAM) instead of block RAM.

An iCE40UP5K has 30 block RAMs of 4 kbit and 4 SPRAMs of 256 kbit (16K x 16). A
block RAM has a read port and a write port with their own addresses; an SPRAM has one
port, so only a memory whose reads and writes share one address maps to it. Most
weight-like memories qualify: they are written while the accelerator is idle (loading)
and read while it runs (or reads a region back), never both at once, so a
multiplexer on the address, chosen by what the accelerator is doing, is all it takes.
:class:`SinglePortMemory` is that memory: one address, a read enable and a write
enable.

How it is mapped:

* on a platform whose device is an iCE40 UltraPlus (``device`` starting with
  ``iCE40UP``), the memory carries ``ram_style = "huge"`` and yosys
  (``synth_ice40 -spram``) maps it to ``SB_SPRAM256KA`` blocks, ``ceil(width / 16) *
  ceil(depth / 16384)`` of them (:func:`spram_blocks`). An SPRAM has no initial
  contents, so the yosys script must first delete the memory's (all-zero)
  initialization: :data:`DROP_INIT` is that command;
* elsewhere (no platform, simulators, ECP5, Gowin) it is an ordinary
  ``amaranth.lib.memory.Memory`` with one read and one write port on the same address,
  which maps to block RAM.

A design that asks for more SPRAM than the device has fails in place and route with
the SPRAM count named (``shiftpool build``).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Shape, ShapeCastable
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["DROP_INIT", "SPRAM_DEPTH", "SPRAM_WIDTH", "SinglePortMemory", "has_spram",
           "load_region_port", "spram_blocks"]

#: Rows and bits of one iCE40 SPRAM block.
SPRAM_DEPTH = 16384
SPRAM_WIDTH = 16
#: Name of the memory inside every :class:`SinglePortMemory` (its ``MEMID`` in yosys).
STORAGE_NAME = "single_port_storage"
#: The yosys command, to run after reading the design and before ``synth_ice40
#: -spram``, that deletes the initialization of every :class:`SinglePortMemory` (SPRAM
#: cannot be initialized; yosys refuses to map a memory that is).
DROP_INIT = f"delete t:$meminit_v2 r:MEMID=\\{STORAGE_NAME} %i"


def spram_blocks(width: int, depth: int) -> int:
    """SPRAM blocks a ``width`` x ``depth`` memory takes."""
    return -(-width // SPRAM_WIDTH) * -(-depth // SPRAM_DEPTH)


def has_spram(platform) -> bool:
    """Whether ``platform`` (an amaranth platform, or ``None``) is an iCE40 UltraPlus,
    the family with SPRAM."""
    return str(getattr(platform, "device", "")).startswith("iCE40UP")


class SinglePortMemory(wiring.Component):
    """A memory with one address shared by reads and writes.

    Parameters
    ----------
    shape : ShapeLike
        Shape of a row (a plain width, or a layout as for ``lib.memory.Memory``).
    depth : int
        Rows.
    spram : bool
        Hold it in SPRAM when the platform has SPRAM (see the module docstring);
        ``False`` keeps it in block RAM everywhere.

    Members
    -------
    addr : In(ceil_log2(depth))
        The row read or written in this cycle.
    rd_en : In(1)
        Read ``addr``: its row is on ``rd_data`` from the next cycle on.
    rd_data : Out(shape)
        The row read last; held while ``rd_en`` is low.
    wr_en : In(1)
        Write ``wr_data`` into row ``addr`` at the end of this cycle.
    wr_data : In(shape)

    A cycle either reads or writes. ``rd_en`` and ``wr_en`` must not both be high in
    one cycle: if they are, the write happens and the read does not. After a write,
    ``rd_data`` is unspecified until the next read (an SPRAM's output is undefined
    after a write; the block-RAM version keeps the previous row, so do not rely on
    either).
    """

    def __init__(self, *, shape, depth: int, spram: bool = True):
        if not isinstance(shape, ShapeCastable):
            shape = Shape.cast(shape)
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"depth must be a positive integer, not {depth!r}")
        self.shape = shape
        self.depth = depth
        self.spram = bool(spram)
        super().__init__({
            "addr": In(ceil_log2(depth)),
            "rd_en": In(1),
            "rd_data": Out(shape),
            "wr_en": In(1),
            "wr_data": In(shape),
        })

    def elaborate(self, platform):
        m = Module()
        attrs = {"ram_style": "huge"} if self.spram and has_spram(platform) else None
        mem = memory.Memory(shape=self.shape, depth=self.depth, init=[], attrs=attrs)
        m.submodules[STORAGE_NAME] = mem
        wp = mem.write_port()
        # Not transparent, and disabled while writing: what an SPRAM does (its port
        # either reads or writes).
        rp = mem.read_port()
        m.d.comb += [
            wp.addr.eq(self.addr), wp.data.eq(self.wr_data), wp.en.eq(self.wr_en),
            rp.addr.eq(self.addr), rp.en.eq(self.rd_en & ~self.wr_en),
            self.rd_data.eq(rp.data),
        ]
        return m


def load_region_port(m: Module, name: str, load, code: int, *, shape, depth: int,
                     spram: bool = True):
    """A load region's memory as a :class:`SinglePortMemory` added to ``m`` under
    ``name``, written from the accelerator's ``load`` stream (rows whose ``region`` is
    ``code``), and a read-port interface (``addr``, ``en``, ``data``, as
    ``lib.memory.ReadPort``) for the rest of the design to drive.

    A row being written takes the address (and the read does not happen). The
    accelerator takes load rows only while idle, and then reads a region only for a
    readback request, which the link never makes in the cycle it offers a row.
    """
    mem = SinglePortMemory(shape=shape, depth=depth, spram=spram)
    m.submodules[name] = mem
    port = memory.ReadPort.Signature(addr_width=len(mem.addr), shape=shape).create()
    write = load.valid & load.ready & (load.payload.region == code)
    m.d.comb += [
        mem.addr.eq(Mux(write, load.payload.addr, port.addr)),
        mem.wr_en.eq(write), mem.wr_data.eq(load.payload.data),
        mem.rd_en.eq(port.en), port.data.eq(mem.rd_data),
    ]
    return port
