"""The write-back unit: a lane group's result -> bias add, requantizer -> memory writes."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..config import AcceleratorConfig
from ..engines.common import engine_output_layout
from ..program import act_words, addr_width, lane_width
from ..requantizer import requantize
from .layouts import descriptor_layout, group_layout, word_add

__all__ = ["WriteBack", "result_layout", "wb_layer_layout", "write_layout"]

#: Cycles from a result's capture to the write of its first lane.
WRITE_LATENCY = 3


def result_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """One lane group's result: the engine's sums and the group's data."""
    return data.StructLayout({"acc": engine_output_layout(cfg), "group": group_layout(cfg)})


def wb_layer_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """The descriptor fields the write-back unit uses (shaped as in the descriptor)."""
    desc = descriptor_layout(cfg)
    return data.StructLayout({name: desc[name].shape
                              for name in ("shift", "carry", "lane_w", "lane_l", "n1",
                                           "channels")})


def write_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """One lane's write: its activation word, lane and requantized value (hidden
    layers), its compiled channel (an output memory row) and the value before
    requantization (the output layer)."""
    return data.StructLayout({
        "addr": unsigned(addr_width(act_words(cfg))),
        "lane": unsigned(lane_width(cfg)),
        "chan": unsigned(ceil_log2(cfg.out_depth)),
        "act": unsigned(cfg.act_bits),
        "value": signed(cfg.acc_width),
    })


class WriteBack(wiring.Component):
    """Takes a lane group's result, adds each lane's bias, requantizes it and writes
    the group's valid lanes one per cycle.

    A result is taken (``result.ready``) while the unit is free or selecting its last
    lane, so results ``j`` of ``V_j`` valid lanes are captured at
    ``c_j >= c_{j-1} + V_{j-1}``, and lane ``k`` of result ``j`` is on ``write`` in
    cycle ``c_j + 3 + k``. The bias row is read in the cycle of the capture (the
    memory answers the next cycle and holds it). Lane ``k`` of a group is valid while
    ``chan + k`` is below ``channels`` (a two-pass group) or ``n1``; lane 0 is always
    written. ``layer`` must hold still while the unit is not idle.

    Parameters
    ----------
    config : AcceleratorConfig

    Members
    -------
    result : In(stream.Signature(result_layout(config)))
        The engine's result and its group's data.
    layer : In(wb_layer_layout(config))
        The running layer's ``shift``, ``n1``, ``channels`` and the step of one
        channel in the activation buffer (``lane_w``, ``lane_l``, ``carry``).
    bias : In(memory.ReadPort.Signature(ceil_log2(bias_depth), bias row))
        The bias memory's read port (driven by the unit).
    write : Out(stream.Signature(write_layout(config), always_ready=True))
        Lane ``k``: ``value = acc[k] + bias[k]``, ``act`` its requantization by
        ``shift``, at activation word and lane ``(group.addr, group.lane) + k *
        (lane_w, lane_l)`` (lanes carrying into words, :func:`word_add`) and channel
        ``group.chan + k``.
    idle : Out(1)
        Nothing captured is still to be written after this cycle's write.
    """

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        super().__init__({
            "result": In(stream.Signature(result_layout(config))),
            "layer": In(wb_layer_layout(config)),
            # Shaped as the read port of lib.memory.Memory(depth=bias_depth).
            "bias": In(memory.ReadPort.Signature(
                addr_width=ceil_log2(config.bias_depth),
                shape=data.ArrayLayout(signed(config.acc_width), config.lanes))),
            "write": Out(stream.Signature(write_layout(config), always_ready=True)),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        res, layer = self.result, self.layer
        busy = Signal()
        lane = Signal(range(cfg.lanes))
        acc = Signal(engine_output_layout(cfg))
        group = Signal(group_layout(cfg))
        addr = Signal(addr_width(act_words(cfg)))
        alane = Signal(lane_width(cfg))
        chan = group.chan + lane
        limit = Mux(group.two, layer.channels, layer.n1)
        # Whether the lane being written is the group's last, a register computed a
        # cycle ahead: it gates result.ready, which reaches the engine and the whole
        # issue pipeline in the same cycle.
        lane_last = Signal()
        free = ~busy | lane_last                     # free, or writing its last lane now
        capture = Signal()
        m.d.comb += [
            capture.eq(res.valid & free),
            res.ready.eq(free),
            # The bias row is read as the result is captured and held (en) until the next.
            self.bias.addr.eq(res.payload.group.bias),
            self.bias.en.eq(capture),
        ]
        with m.If(busy):
            next_addr, next_lane = word_add(cfg, addr, alane, layer.lane_w, layer.lane_l,
                                            layer.carry)
            m.d.sync += [lane.eq(lane + 1), addr.eq(next_addr), alane.eq(next_lane),
                         lane_last.eq((lane + 1 == cfg.lanes - 1) | (chan + 2 >= limit))]
            with m.If(lane_last):
                m.d.sync += busy.eq(0)
        with m.If(capture):
            first = res.payload.group
            m.d.sync += lane_last.eq(
                (cfg.lanes == 1) | (first.chan + 1 >= Mux(first.two, layer.channels, layer.n1)))
            m.d.sync += [busy.eq(1), lane.eq(0), acc.eq(res.payload.acc),
                         group.eq(first), addr.eq(first.addr), alane.eq(first.lane)]
        value = Signal(signed(cfg.acc_width))
        m.d.comb += value.eq(acc[lane] + self.bias.data[lane])
        # Two register stages follow: the bias add ends in the first, the requantizer
        # in the second, and the memories are written from that one, two cycles after
        # the lane was selected.
        vq = Signal(write_layout(cfg))
        vq_valid = Signal()
        m.d.sync += [vq_valid.eq(busy), vq.addr.eq(addr), vq.lane.eq(alane), vq.chan.eq(chan),
                     vq.value.eq(value)]
        act = requantize(m, vq.value, layer.shift, cfg.act_bits,
                         half_even=cfg.rounding == "half_even")
        wq = self.write.payload
        m.d.sync += [self.write.valid.eq(vq_valid), wq.addr.eq(vq.addr), wq.lane.eq(vq.lane),
                     wq.chan.eq(vq.chan),
                     wq.act.eq(act), wq.value.eq(vq.value)]
        m.d.comb += self.idle.eq(~busy & ~vq_valid)
        return m
