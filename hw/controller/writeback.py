"""The write-back unit: a lane group's result -> bias add, requantizer -> memory writes."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..config import AcceleratorConfig
from ..engines.common import engine_output_layout
from ..program import act_words, addr_width, lane_width
from ..requantizer import requantize
from .layouts import act_word_layout, descriptor_layout, group_layout, word_add

__all__ = ["WriteBack", "has_word_path", "result_layout", "wb_layer_layout", "write_layout"]

#: Cycles from a result's capture to its first write.
WRITE_LATENCY = 3


def has_word_path(cfg: AcceleratorConfig) -> bool:
    """The unit writes a word's worth of lanes per cycle (``writeback = "word"``; with
    one lane or one tap that is one lane, and the unit is built as ``"lane"``)."""
    return cfg.writeback == "word" and cfg.lanes > 1 and cfg.taps > 1


def result_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """One lane group's result: the engine's sums and the group's data."""
    return data.StructLayout({"acc": engine_output_layout(cfg), "group": group_layout(cfg)})


def wb_layer_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """The descriptor fields the write-back unit uses (shaped as in the descriptor)."""
    desc = descriptor_layout(cfg)
    return data.StructLayout({name: desc[name].shape
                              for name in ("last", "shift", "carry", "lane_w", "lane_l", "n1",
                                           "channels")})


def write_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """One write: an activation word's address, data and lane enables (hidden layers),
    and for the output layer, whose writes are one lane each, that lane's compiled
    channel (an output memory row) and its value before requantization."""
    return data.StructLayout({
        "addr": unsigned(addr_width(act_words(cfg))),
        "data": act_word_layout(cfg),
        "en": unsigned(cfg.taps),
        "chan": unsigned(ceil_log2(cfg.out_depth)),
        "value": signed(cfg.acc_width),
    })


class WriteBack(wiring.Component):
    """Takes a lane group's result, adds each lane's bias, requantizes it and writes
    the group's valid lanes: one lane per write, or (:func:`has_word_path`) the lanes
    that go to one word in one write.

    A group's ``V`` valid lanes take ``W`` writes. ``W = V`` with ``writeback =
    "lane"``, in the output layer (``layer.last``) and where one channel further is
    not one lane further (``(lane_w, lane_l) != (0, 1)``: a flat map of more than one
    position). Else (``"word"``) lane ``k`` goes to word ``group.addr + carry *
    ((group.lane + k) // taps)``, lane ``(group.lane + k) % taps``, and the group
    takes ``W = ceil((group.lane + V) / taps)`` writes, one per word.

    A result is taken (``result.ready``) while the unit is free or selecting its last
    write, so results ``j`` are captured at ``c_j >= c_{j-1} + W_{j-1}``, and write
    ``i`` of result ``j`` is on ``write`` in cycle ``c_j + 3 + i``. The bias row is
    read in the cycle of the capture (the memory answers the next cycle and holds it).
    Lane ``k`` of a group is valid while ``chan + k`` is below ``channels`` (a two-pass
    group) or ``n1``; lane 0 is always written. ``layer`` must hold still while the
    unit is not idle.

    Parameters
    ----------
    config : AcceleratorConfig

    Members
    -------
    result : In(stream.Signature(result_layout(config)))
        The engine's result and its group's data.
    layer : In(wb_layer_layout(config))
        The running layer's ``last``, ``shift``, ``n1``, ``channels`` and the step of
        one channel in the activation buffer (``lane_w``, ``lane_l``, ``carry``).
    bias : In(memory.ReadPort.Signature(ceil_log2(bias_depth), bias row))
        The bias memory's read port (driven by the unit).
    write : Out(stream.Signature(write_layout(config), always_ready=True))
        Lane ``k``'s ``act``, the requantization of ``acc[k] + bias[k]`` by ``shift``,
        in lane ``l`` of word ``addr`` where ``en[l]`` is set, at ``(group.addr,
        group.lane) + k * (lane_w, lane_l)`` (lanes carrying into words,
        :func:`word_add`); a lane's write also carries its channel ``group.chan + k``
        and ``value = acc[k] + bias[k]``.
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
        word_path = has_word_path(cfg)
        busy = Signal()
        lane = Signal(range(cfg.lanes))
        acc = Signal(engine_output_layout(cfg))
        group = Signal(group_layout(cfg))
        addr = Signal(addr_width(act_words(cfg)))
        alane = Signal(lane_width(cfg))
        chan = group.chan + lane
        limit = Mux(group.two, layer.channels, layer.n1)
        # Whether the write being selected is the group's last, a register computed a
        # cycle ahead: it gates result.ready, which reaches the engine and the whole
        # issue pipeline in the same cycle.
        last = Signal()
        free = ~busy | last                          # free, or selecting its last write now
        capture = Signal()
        m.d.comb += [
            capture.eq(res.valid & free),
            res.ready.eq(free),
            # The bias row is read as the result is captured and held (en) until the next.
            self.bias.addr.eq(res.payload.group.bias),
            self.bias.en.eq(capture),
        ]
        first = res.payload.group
        first_limit = Mux(first.two, layer.channels, layer.n1)
        # One write per lane: the lanes' (word, lane) step by (lane_w, lane_l).
        lane_next = word_add(cfg, addr, alane, layer.lane_w, layer.lane_l, layer.carry)
        lane_steps = [lane.eq(lane + 1), addr.eq(lane_next[0]), alane.eq(lane_next[1]),
                      last.eq((lane + 1 == cfg.lanes - 1) | (chan + 2 >= limit))]
        lane_first = (cfg.lanes == 1) | (first.chan + 1 >= first_limit)
        # What each lane of the selected write takes: the group's lane idx[j] where
        # en[j] is set.
        sel_en = Signal(cfg.taps)
        sel_idx = Signal(data.ArrayLayout(range(cfg.lanes), cfg.taps))
        m.d.comb += [sel_en.eq(1 << alane), sel_idx.eq(Cat(*([lane] * cfg.taps)))]
        if word_path:
            # One write per word: word lane j takes the group's lane rot + j, rot being
            # taps * (words written) - group.lane; each word is `carry` words on.
            words = Signal()
            m.d.comb += words.eq(~layer.last & (layer.lane_w == 0) & (layer.lane_l == 1))
            rot = Signal(range(-(cfg.taps - 1), cfg.lanes + cfg.taps))
            word_steps = [addr.eq(addr + layer.carry), rot.eq(rot + cfg.taps),
                          last.eq((rot + 2 * cfg.taps >= cfg.lanes)
                                  | (group.chan + rot + 2 * cfg.taps >= limit))]
            word_first = ((cfg.taps - first.lane >= cfg.lanes)
                          | (first.chan + cfg.taps - first.lane >= first_limit))
            with m.If(words):
                for j in range(cfg.taps):
                    k = rot + j
                    m.d.comb += [sel_en[j].eq((k >= 0) & (k < cfg.lanes)
                                              & ((k == 0) | (group.chan + k < limit))),
                                 sel_idx[j].eq(k[:ceil_log2(cfg.lanes)])]
        with m.If(busy):
            if word_path:
                with m.If(words):
                    m.d.sync += word_steps
                with m.Else():
                    m.d.sync += lane_steps
            else:
                m.d.sync += lane_steps
            with m.If(last):
                m.d.sync += busy.eq(0)
        with m.If(capture):
            m.d.sync += [busy.eq(1), lane.eq(0), acc.eq(res.payload.acc),
                         group.eq(first), addr.eq(first.addr), alane.eq(first.lane),
                         last.eq(lane_first)]
            if word_path:
                m.d.sync += rot.eq(-first.lane)
                with m.If(words):
                    m.d.sync += last.eq(word_first)

        # Two register stages follow: the bias add ends in the first, the requantizer
        # in the second, and the memories are written from that one, two cycles after
        # the write was selected. The word path adds and requantizes every lane (the
        # same sums for each of a group's writes), the lane path the selected one.
        v1 = Signal(data.StructLayout({
            "addr": unsigned(len(addr)), "en": unsigned(cfg.taps), "idx": sel_idx.shape(),
            "chan": unsigned(ceil_log2(cfg.out_depth)), "lane": range(cfg.lanes),
            "value": data.ArrayLayout(signed(cfg.acc_width), cfg.lanes if word_path else 1)}))
        v1_valid = Signal()
        m.d.sync += [v1_valid.eq(busy), v1.addr.eq(addr), v1.en.eq(sel_en), v1.idx.eq(sel_idx),
                     v1.chan.eq(chan), v1.lane.eq(lane)]
        if word_path:
            m.d.sync += [v1.value[k].eq(acc[k] + self.bias.data[k]) for k in range(cfg.lanes)]
        else:
            m.d.sync += v1.value[0].eq(acc[lane] + self.bias.data[lane])
        acts = [requantize(m, v, layer.shift, cfg.act_bits,
                           half_even=cfg.rounding == "half_even") for v in v1.value]
        wq = self.write.payload
        m.d.sync += [self.write.valid.eq(v1_valid), wq.addr.eq(v1.addr), wq.en.eq(v1.en),
                     wq.chan.eq(v1.chan)]
        if word_path:
            acts = data.ArrayLayout(unsigned(cfg.act_bits), cfg.lanes)(Cat(*acts))
            m.d.sync += [wq.data[j].eq(acts[v1.idx[j]]) for j in range(cfg.taps)]
            m.d.sync += wq.value.eq(v1.value[v1.lane])
        else:
            m.d.sync += [wq.data[j].eq(acts[0]) for j in range(cfg.taps)]
            m.d.sync += wq.value.eq(v1.value[0])
        m.d.comb += self.idle.eq(~busy & ~v1_valid)
        return m
