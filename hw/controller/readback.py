"""The readback unit: reads rows of the load regions back for the link (READ)."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal, Value, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..config import AcceleratorConfig
from ..memory_map import load_addr_width, region_depths, region_widths
from ..program import REGIONS
from ..signature import readback_signature

__all__ = ["Readback", "region_rows_layout"]


def region_rows_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """One row of each region the engine has (as its read port shows it), by name."""
    depths, widths = region_depths(cfg), region_widths(cfg)
    return data.StructLayout({name: unsigned(widths[name]) for name in REGIONS
                              if depths[name]})


class Readback(wiring.Component):
    """Answers readback requests from the regions' read ports while the accelerator
    is idle.

    A request is taken (``readback.req.ready``) while ``enable`` is high and none is
    in progress, into a register, so that the link's request logic does not reach the
    memories' addresses in the same cycle. The next cycle ``read`` asks for every
    read port to read row ``addr``; the cycle after, the requested byte of the
    addressed region's row (from ``rows``, zero above its width) is picked into a
    register while ``hold`` keeps every port's data (enable low), and from the cycle
    after that it is offered on ``readback.resp`` until taken: three cycles from a
    request to its response, and no path from the memories' outputs to the link. Each
    region's byte is picked from its own row, then the region: a row-wide multiplexer
    of all regions would cost more.

    Parameters
    ----------
    config : AcceleratorConfig

    Members
    -------
    readback : In(readback_signature(config))
        The accelerator's readback port.
    enable : In(1)
        Requests may be taken: the accelerator is idle and no input word is offered
        (an input word has priority).
    rows : In(region_rows_layout(config))
        Each region's read port data.
    addr : Out(load_addr_width(config))
        The row every read port reads while ``read``.
    read : Out(1)
        Read ``addr`` on every read port in this cycle.
    hold : Out(1)
        Keep every read port's data in this cycle (the response byte is picked).
    latched : Out(1)
        A request was taken and its ports are addressed in this cycle (the
        accelerator takes no load row then: a single-port memory could not also be
        written).
    busy : Out(1)
        A request is in progress (the accelerator takes no input word).
    """

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        super().__init__({
            "readback": In(readback_signature(config)),
            "enable": In(1),
            "rows": In(region_rows_layout(config)),
            "addr": Out(load_addr_width(config)),
            "read": Out(1),
            "hold": Out(1),
            "latched": Out(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        req, resp = self.readback.req, self.readback.resp
        pending = Signal()
        picking = Signal()
        picked = Signal(8)
        region = Signal.like(req.payload.region)
        byte = Signal.like(req.payload.byte)
        m.d.comb += [
            self.busy.eq(self.latched | picking | pending),
            req.ready.eq(self.enable & ~self.busy),
            self.read.eq(self.latched),
            self.hold.eq(picking),
            resp.valid.eq(pending),
            resp.payload.eq(picked),
        ]
        with m.Switch(region):
            for name, _ in self.rows.shape():
                row = Value.cast(self.rows[name])
                n = -(-len(row) // 8)
                padded = row if len(row) == 8 * n else Cat(row, Const(0, 8 * n - len(row)))
                with m.Case(REGIONS.index(name)):
                    with m.If(picking):
                        m.d.sync += picked.eq(padded.word_select(byte, 8))
        with m.If(resp.valid & resp.ready):
            m.d.sync += pending.eq(0)
        with m.If(req.valid & req.ready):
            m.d.sync += [self.latched.eq(1), self.addr.eq(req.payload.addr),
                         region.eq(req.payload.region), byte.eq(req.payload.byte)]
        with m.If(self.latched):
            m.d.sync += [self.latched.eq(0), picking.eq(1)]
        with m.If(picking):
            m.d.sync += [picking.eq(0), pending.eq(1)]
        return m
