"""The MLG weight generator: expands stored bases into one engine weight row at a time.

Per request (one weight row: lane group ``g``, step ``s``) it runs ``count``
iterations, one per cycle; iteration ``n`` (basis ``c``) computes a level-1 row of
``taps`` values and adds it, times each lane's mixing coefficient, to that lane's
accumulators::

    level 1 on:  W1[j] = sum_b u[j*Bi + b] * B[c, b, k_j]    (u: the u store's row)
    level 1 off: W1[j] = the stored w1 row's value j
    level 2 on:  acc[l][j] += V[g*lanes + l, c] * W1[j]        (count = Bc)
    level 2 off: acc[l][j] += (l == n) * W1[j]                 (count = valid lanes)

where tap ``j``'s kernel position ``k_j`` is the request's ``k0`` (grouped steps) or
``(k0 + j) mod 9`` (flat steps); the ``u`` row already holds each tap's channel's
coefficients (``hw/generator_layout.py``). The products and sums are exact at the
widths :attr:`AcceleratorConfig.mlg_w1_width` and
:attr:`~AcceleratorConfig.mlg_w_width`; nothing is rounded or clipped. Why this
organisation: one basis per cycle needs ``lanes*taps`` small products (``W1`` bits
by ``qv + 1``) and ``taps*Bi`` tiny ones (``qu + 1`` by ``qb + 1``) for level 1,
shared by every lane, and one read of each store per cycle; generating a whole row
in one cycle would need ``Bc`` times the products. The level-1 ones are shift-and-add
in logic (:func:`logic_product`: ``qb + 1 <= 9`` bits, too small to spend a DSP block
on); the level-2 ones are multipliers (DSP blocks where the device has them).
Measured on the iCE40UP5K (2 lanes x 2 taps, ``yosys synth_ice40 -dsp``): all eight
products as multipliers, 311 LUT4 and 8 DSP blocks; all eight in logic, 1067 LUT4.

Timing: a request is accepted while the output is empty (or being emptied); its
iterations read the stores in the ``count`` cycles after the accept, the level-1 row is
registered one cycle after each read, and the row appears on ``o`` three cycles after
the last read's address: a row every ``count + GEN_LATENCY`` cycles
(``hw/generator_layout.row_cycles``) when requests are offered and rows taken at once.
"""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import KERNEL_TAPS, AcceleratorConfig
from ..generator_layout import request_fields, store_depths, store_layouts
from ..program import addr_width, struct_layout

__all__ = ["WeightGenerator", "generator_row_layout", "logic_product", "store_shape"]


def logic_product(a, b):
    """``a * b`` for a narrow signed ``b`` (a stored basis or coefficient, ``q + 1``
    bits) as a sum of shifted copies of ``a``, one per bit of ``b`` (the top one
    subtracted): adders in logic, not a multiplier, so that synthesis leaves the
    device's DSP blocks to the engine's wide products."""
    n = len(b)
    terms = [Mux(b[i], a << i, 0) for i in range(n - 1)]
    return sum(terms, Const(0, 1)) - Mux(b[n - 1], a << (n - 1), 0)


def store_shape(cfg: AcceleratorConfig, name: str) -> data.ArrayLayout:
    """Row shape of the store ``name`` (``hw/generator_layout.STORES``)."""
    n, width = store_layouts(cfg)[name]
    return data.ArrayLayout(signed(width), n)


def generator_row_layout(cfg: AcceleratorConfig) -> data.ArrayLayout:
    """One generated weight row: ``lanes x taps`` signed ``mlg_w_width``-bit weights,
    ``row[l][j]`` the weight of lane ``l``, tap ``j`` (the in-situ engine's ``codes``)."""
    return data.ArrayLayout(data.ArrayLayout(signed(cfg.mlg_w_width), cfg.taps), cfg.lanes)


def _read_port(cfg, name):
    return In(memory.ReadPort.Signature(addr_width=addr_width(store_depths(cfg)[name]),
                                        shape=store_shape(cfg, name)))


class WeightGenerator(wiring.Component):
    """MLG weight generator (see the module docstring for the arithmetic and timing).

    Parameters
    ----------
    config : AcceleratorConfig
        With ``engine == "insitu"``: lanes, taps, the ``mlg_*`` widths and depth.

    Members
    -------
    i : In(stream.Signature(struct_layout(request_fields(config))))
        One request per weight row (``hw/generator_layout.request_fields``).
    o : Out(stream.Signature(generator_row_layout(config)))
        The generated row, held until taken.
    v_rd, u_rd, b_rd, w1_rd : In(memory.ReadPort.Signature(...))
        Read ports of the four stores (synchronous).
    """

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        if config.engine != "insitu":
            raise ValueError(f"WeightGenerator needs engine 'insitu'; config field 'engine' "
                             f"is {config.engine!r}")
        self._config = config
        super().__init__({
            "i": In(stream.Signature(struct_layout(request_fields(config)))),
            "o": Out(stream.Signature(generator_row_layout(config))),
            "v_rd": _read_port(config, "v"),
            "u_rd": _read_port(config, "u"),
            "b_rd": _read_port(config, "b"),
            "w1_rd": _read_port(config, "w1"),
        })

    @property
    def config(self) -> AcceleratorConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        lanes, taps = cfg.lanes, cfg.taps
        req = Signal(self.i.payload.shape())        # the request being generated
        busy = Signal()                             # iterations left to issue
        it = Signal.like(req.count)                 # the iteration being issued
        v_addr = Signal.like(req.v_addr, name="v_cur")
        a_addr = Signal.like(req.a_addr, name="a_cur")
        b_addr = Signal.like(req.b_addr, name="b_cur")

        # Accept a request while nothing is being issued and no row would be pending
        # when this one's first product lands (the output is empty or leaves now).
        out_free = ~self.o.valid | self.o.ready
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        pending = Signal()                          # iterations still in the pipeline
        m.d.comb += self.i.ready.eq(~busy & ~pending & out_free)
        with m.If(self.i.valid & self.i.ready):
            p = self.i.payload
            m.d.sync += [req.eq(p), busy.eq(1), it.eq(0), v_addr.eq(p.v_addr),
                         a_addr.eq(p.a_addr), b_addr.eq(p.b_addr)]

        # Stage 0: read the stores for iteration `it`.
        ports = [self.v_rd, self.u_rd, self.b_rd, self.w1_rd]
        m.d.comb += [port.en.eq(busy) for port in ports]
        m.d.comb += [self.v_rd.addr.eq(v_addr), self.b_rd.addr.eq(b_addr),
                     self.u_rd.addr.eq(a_addr), self.w1_rd.addr.eq(a_addr)]
        s1_valid, s1_first, s1_last = Signal(), Signal(), Signal()
        s1_it = Signal.like(it)
        m.d.sync += [s1_valid.eq(busy), s1_first.eq(it == 0), s1_last.eq(it == req.count - 1),
                     s1_it.eq(it)]
        with m.If(busy):
            m.d.sync += [it.eq(it + 1), v_addr.eq(v_addr + 1), b_addr.eq(b_addr + 1),
                         a_addr.eq(a_addr + req.a_stride)]
            with m.If(it == req.count - 1):
                m.d.sync += busy.eq(0)

        # Stage 1: the level-1 row and each lane's factor, registered.
        w1 = Signal(data.ArrayLayout(signed(cfg.mlg_w1_width), taps))
        factor = Signal(data.ArrayLayout(signed(cfg.mlg_qv + 1), lanes))
        s2_valid, s2_first, s2_last = Signal(), Signal(), Signal()
        m.d.sync += [s2_valid.eq(s1_valid), s2_first.eq(s1_first), s2_last.eq(s1_last)]
        b_row = self.b_rd.data
        b_col = [Array(b_row[b * KERNEL_TAPS + k] for k in range(KERNEL_TAPS))
                 for b in range(cfg.mlg_bi)]
        u_row = self.u_rd.data
        for j in range(taps):
            # Tap j's kernel position: k0 (grouped), or k0 + j mod 9 (flat; constants).
            flat_k = Array(Const((k0 + j) % KERNEL_TAPS, range(KERNEL_TAPS))
                           for k0 in range(KERNEL_TAPS))[req.k0]
            kpos = Mux(req.grouped, req.k0, flat_k)
            level1 = sum(logic_product(u_row[j * cfg.mlg_bi + b], b_col[b][kpos])
                         for b in range(cfg.mlg_bi))
            m.d.sync += w1[j].eq(Mux(req.level1, level1, self.w1_rd.data[j]))
        for lane in range(lanes):
            m.d.sync += factor[lane].eq(Mux(req.level2, self.v_rd.data[lane], s1_it == lane))

        # Stage 2: accumulate; the row is the output register.
        acc = Signal(generator_row_layout(cfg))
        m.d.comb += self.o.payload.eq(acc)
        with m.If(s2_valid):
            for lane in range(lanes):
                for j in range(taps):
                    m.d.sync += acc[lane][j].eq(Mux(s2_first, 0, acc[lane][j])
                                                + factor[lane] * w1[j])
            with m.If(s2_last):
                m.d.sync += self.o.valid.eq(1)
        m.d.comb += pending.eq(s1_valid | s2_valid)
        return m
