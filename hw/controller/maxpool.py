"""The max-pool unit: 2x2 windows read through the activation buffer's read ports,
their maximum written back."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import AcceleratorConfig
from ..program import POOL_WINDOW, addr_width, count_width, pool_phases
from .layouts import descriptor_layout

__all__ = ["MaxPool", "pool_ports", "pool_write_layout", "window_layout"]


def pool_ports(cfg: AcceleratorConfig) -> int:
    """Read ports a window is read through: ``min(taps, 4)``."""
    return min(cfg.taps, POOL_WINDOW)


def window_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """One read beat of a window: the address of its top-left word, the phase (which
    of the window's words the ports read: words ``phase * taps ..``), and the output
    address the window's maximum goes to."""
    return data.StructLayout({
        "base": unsigned(count_width(cfg.act_depth + 2 * cfg.max_dim + 2)),
        "phase": range(pool_phases(cfg)),
        "addr": unsigned(addr_width(cfg.act_depth)),
    })


def pool_write_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """One output of the max-pool: its activation address and value."""
    return data.StructLayout({"addr": unsigned(addr_width(cfg.act_depth)),
                              "data": unsigned(cfg.act_bits)})


def _max(a, b):
    return Mux(a > b, a, b)


def _max_tree(values):
    """Maximum of unsigned ``values`` as a balanced tree."""
    values = list(values)
    while len(values) > 1:
        pairs = [_max(a, b) for a, b in zip(values[0::2], values[1::2], strict=False)]
        values = pairs + values[len(pairs) * 2:]
    return values[0]


class MaxPool(wiring.Component):
    """Reads each 2x2 window in ``pool_phases(config) = ceil(4 / taps)`` beats and
    writes its maximum one cycle after the window's last beat.

    A beat on ``window`` (taken every cycle) addresses up to ``taps`` words of the
    window at ``base`` (words ``e = phase * taps + j`` on port ``j``: ``base + (e & 1)
    + (in_width if e >= 2 else 0)``) through ``read_addr`` in the same cycle; the
    ports answer the next cycle on ``words``. A window's beats come in phase order
    (idle cycles may sit between them); ``in_width`` holds still during a layer.

    Parameters
    ----------
    config : AcceleratorConfig

    Members
    -------
    window : In(stream.Signature(window_layout(config), always_ready=True))
        The read beats.
    in_width : In(the descriptor's in_width)
        Words in one input row.
    read_addr : Out(ArrayLayout(window_layout(config)["base"], pool_ports(config)))
        The read ports' addresses for the beat on ``window``.
    words : In(ArrayLayout(unsigned(act_bits), pool_ports(config)))
        The read ports' data, a cycle after ``read_addr``.
    write : Out(stream.Signature(pool_write_layout(config), always_ready=True))
        A window's maximum at its ``addr``.
    """

    def __init__(self, config: AcceleratorConfig):
        self.config = config
        ports = pool_ports(config)
        base = window_layout(config)["base"].shape
        super().__init__({
            "window": In(stream.Signature(window_layout(config), always_ready=True)),
            "in_width": In(descriptor_layout(config)["in_width"].shape),
            "read_addr": Out(data.ArrayLayout(base, ports)),
            "words": In(data.ArrayLayout(unsigned(config.act_bits), ports)),
            "write": Out(stream.Signature(pool_write_layout(config), always_ready=True)),
        })

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        phases = pool_phases(cfg)
        ports = pool_ports(cfg)
        beat = self.window.payload

        def window_word(p, j):
            """Window word read by port ``j`` in phase ``p`` (0..3), or None."""
            e = p * cfg.taps + j
            return e if e < POOL_WINDOW else None

        for j in range(ports):
            offset = 0
            for p in reversed(range(phases)):
                e = window_word(p, j)
                here = 0 if e is None else (e & 1) + (self.in_width if e >= 2 else 0)
                offset = here if p == phases - 1 else Mux(beat.phase == p, here, offset)
            m.d.comb += self.read_addr[j].eq(beat.base + offset)

        # Stage 1: the beat whose words the ports show now. Unused ports read as 0,
        # the identity of an unsigned maximum.
        p1 = Signal(data.StructLayout({"valid": 1, "phase": range(phases),
                                       "addr": addr_width(cfg.act_depth)}))
        m.d.sync += [p1.valid.eq(self.window.valid), p1.phase.eq(beat.phase),
                     p1.addr.eq(beat.addr)]
        words = []
        for j in range(ports):
            used = [p for p in range(phases) if window_word(p, j) is not None]
            ok = 1 if len(used) == phases else Cat(*(p1.phase == p for p in used)).any()
            words.append(Mux(ok, self.words[j], 0))
        value = _max_tree(words)
        if phases > 1:
            running = Signal(unsigned(cfg.act_bits))     # maximum over earlier phases
            value = Mux(p1.phase == 0, value, _max(value, running))
            with m.If(p1.valid):
                m.d.sync += running.eq(value)
        m.d.comb += [
            self.write.valid.eq(p1.valid & (p1.phase == phases - 1)),
            self.write.payload.addr.eq(p1.addr),
            self.write.payload.data.eq(value),
        ]
        return m
