"""The bit-serial weight-pool lookup engine (``docs/arithmetic.md`` §12).

One beat is one group of 8 activations. The engine walks its bit-planes, one per
cycle; in each, the 8 activation bits form a pattern, and every lane adds
``2**b * LUT[pattern][index]`` (lookup path) or ``2**b * sum_j bit_j * weight_j`` (the
bit-serial int8 path, for the layers of a pool model that are not pooled). The lookup
table is filled on chip from the pool, one pool vector at a time, through the
``build`` stream. In precompute mode (§12.6) fill beats store the group's dot product
with every pool vector, and gather beats add stored values, one cycle each.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..config import POOL_GROUP, AcceleratorConfig
from ..memories import SinglePortMemory
from ..program import addr_width, count_width, table_build_cycles
from ..spram_choice import spram_memories
from .common import _adder_tree, check_engine_config, engine_output_layout, register_engine

__all__ = [
    "PATTERNS",
    "PoolLookupEngine",
    "pool_build_layout",
    "pool_input_layout",
    "pool_shift_bits",
    "pool_signature",
    "precompute_shape",
]

#: Bit patterns of one group, i.e. lookup-table rows.
PATTERNS = 1 << POOL_GROUP


def pool_shift_bits(config: AcceleratorConfig) -> int:
    """Width of the build stream's ``shift``: it holds ``0 .. pool_bits + 3``."""
    return ceil_log2(config.pool_bits + 4)


def _int8_term_shape(config: AcceleratorConfig):
    """Shape of one plane's int8 term ``sum_j bit_j * weight_j`` (8 signed bytes)."""
    return signed(config.code_width + ceil_log2(POOL_GROUP))


def precompute_shape(config: AcceleratorConfig):
    """Shape of one precomputed value ``R = sum_{b in planes} 2**b * LUT[pattern_b][p]``.

    A table entry built on chip is at most ``2**(L-1)`` in magnitude, ``L =
    min(entry_bits, pool_bits + 3)``: a narrowed full-table entry is a
    ``signed(lut_bits)``, a half-table entry the sum of two (``entry_bits = lut_bits +
    1``); an exact one is a sum of 8 ``signed(pool_bits)`` values, ``-2**(pool_bits+2) ..
    2**(pool_bits+2) - 8``. So ``|R| <= (2**act_bits - 1) * 2**(L-1) < 2**(act_bits +
    L - 1)``: ``signed(act_bits + L)`` (``docs/arithmetic.md`` §12.7).
    """
    return signed(config.act_bits + min(config.entry_bits, config.pool_bits + 3))


def pool_input_layout(config: AcceleratorConfig) -> data.StructLayout:
    """Payload of the pool engine's input stream (one beat: one group of 8 inputs).

    Members
    -------
    acts : ArrayLayout(unsigned(act_bits), 8)
        Activations, shared by every lane; ``acts[0]`` is the patterns' LSB.
    weights : ArrayLayout(ArrayLayout(signed(8), 8), lanes)
        int8 path: ``weights[l][j]`` multiplies ``acts[j]`` in lane ``l``.
    index : ArrayLayout(unsigned(index_bits), lanes)
        Lookup path: lane ``l``'s pool vector.
    lookup : 1
        1: lookup path, 0: int8 path.
    plane_lo : unsigned(max(1, ceil_log2(act_bits)))
        The lowest bit-plane processed: planes ``plane_lo .. act_bits - 1`` (run-time
        precision ``act_bits - plane_lo``); must be below ``act_bits``.
    first : 1
        The beat starts a dot product: accumulate from zero.
    last : 1
        The beat ends a dot product: present the accumulators on the output.

    Only with ``config.precompute`` (``precompute_steps > 0``):

    fill : 1
        A fill beat (precompute mode; ``lookup`` set, ``first``/``last`` ignored): store
        ``R[step][p]`` for the pool vectors ``p = fill_row * lanes + l``.
    gather : 1
        A gather beat (precompute mode; ``lookup`` set, never with ``fill``): lane ``l``
        adds ``R[step][index[l]]``.
    step : unsigned(count_width(tap_depth))
        The step (group of 8 inputs) ``s`` of a fill or gather beat, below
        ``precompute_steps``.
    fill_row : unsigned(addr_width(fill_rows))
        The fill group ``k`` of a fill beat, below ``fill_rows = pool_size / lanes``.
    """
    fields = {
        "acts": data.ArrayLayout(unsigned(config.act_bits), POOL_GROUP),
        "weights": data.ArrayLayout(data.ArrayLayout(signed(config.code_width), POOL_GROUP),
                                    config.lanes),
        "index": data.ArrayLayout(unsigned(config.index_bits), config.lanes),
        "lookup": 1,
        "plane_lo": unsigned(max(1, ceil_log2(config.act_bits))),
        "first": 1,
        "last": 1,
    }
    if config.precompute:
        fields.update(fill=1, gather=1, step=unsigned(count_width(config.tap_depth)),
                      fill_row=unsigned(addr_width(config.fill_rows)))
    return data.StructLayout(fields)


def pool_build_layout(config: AcceleratorConfig) -> data.StructLayout:
    """Payload of the pool engine's build stream: one pool vector.

    Members
    -------
    index : unsigned(index_bits)
        The pool vector ``p`` (the table column to fill).
    values : ArrayLayout(signed(pool_bits), 8)
        ``pool[p]``.
    shift : unsigned(pool_shift_bits(config))
        The table's narrowing shift ``k`` (``sw.pool_golden.lut_shift``).
    """
    return data.StructLayout({
        "index": unsigned(config.index_bits),
        "values": data.ArrayLayout(signed(config.pool_bits), POOL_GROUP),
        "shift": unsigned(pool_shift_bits(config)),
    })


def pool_signature(config: AcceleratorConfig) -> wiring.Signature:
    """Signature of :class:`PoolLookupEngine`.

    Members
    -------
    i : In(stream.Signature(pool_input_layout(config)))
    o : Out(stream.Signature(engine_output_layout(config)))
    build : In(stream.Signature(pool_build_layout(config)))
    """
    return wiring.Signature({
        "i": In(stream.Signature(pool_input_layout(config))),
        "o": Out(stream.Signature(engine_output_layout(config))),
        "build": In(stream.Signature(pool_build_layout(config))),
    })


@register_engine
class PoolLookupEngine(wiring.Component):
    """Bit-serial weight-pool engine: a table lookup per lane, group and bit-plane.

    **Arithmetic.** Per accepted beat, with ``planes = plane_lo .. act_bits - 1`` and
    ``pattern_b`` the byte whose bit ``j`` is bit ``b`` of ``acts[j]``, lane ``l`` computes
    ``acc[l] = (0 if first else acc[l]) + sum_{b in planes} 2**b * term_b[l]`` with
    ``term_b[l] = LUT[pattern_b][index[l]]`` (``lookup``) or
    ``sum_j bit_b(acts[j]) * weights[l][j]`` (int8 path). On a beat with ``last`` the
    accumulators are presented on ``o``, held until ``o.ready``. Results are exact while
    every accumulator value fits ``signed(acc_width)`` (``config.max_fan_in`` bounds it).
    Fill and gather beats (precompute mode) are described below.

    **Building the table.** A transfer on ``build`` (pool vector ``p``, its values and
    the table's shift ``k``) writes ``LUT[q][p] = (E + 2**(k-1)) >> k`` (``E`` for
    ``k = 0``), ``E = sum_j bit_j(q) * values[j]``, for all 256 patterns ``q``, one per
    cycle (in Gray-code order, so each exact ``E`` is the previous one plus or minus one
    value), truncated to ``signed(lut_bits)``: ``sw.pool_golden.narrow_lut(build_lut(pool),
    k)``. A vector offered while a beat is in flight is taken once that beat's planes
    are all read (no new beat starts while it waits); ``build.ready`` and ``i.ready``
    stay low for the 256 cycles that follow.

    **Half tables** (``config.pool_table == "half"``, ``docs/arithmetic.md`` §12.3). Per
    pool vector two 16-entry tables: ``LO[n][p]`` from ``values[0..3]`` and ``HI[n][p]``
    from ``values[4..7]``, each ``(E + 2**(k-1)) >> k`` of its exact sum, truncated to
    ``signed(lut_bits)``. A build writes both, one nibble ``n`` per cycle, in 16 cycles
    (``build.ready`` low for 16). A lookup reads ``LO[pattern & 15][index]`` and
    ``HI[pattern >> 4][index]`` from two memories in the same cycle and adds them
    (``entry_bits = lut_bits + 1``): ``sw.pool_golden.table(pool, lut_bits, "half")``.
    Everything else, timing included, is as with the full table.

    **Memory organisation.** The table is replicated per lane: lane ``l`` owns a memory of
    ``256 * pool_size`` entries of ``signed(lut_bits)`` at address
    ``Cat(index, pattern)``. All lanes see the same pattern in a cycle but different
    indices, so each reads its own copy, once per cycle; all copies are written together.
    Each copy is addressed by one signal shared by writes and reads (build address while
    building, lookup address otherwise), and reads and writes never share a cycle: it is
    a single-ported RAM. On the iCE40 UP5K a 64-vector table of 16-bit entries (256 Kbit)
    is exactly one SB_SPRAM256KA (16K x 16) per lane, whereas a row-wide organisation
    (all vectors of one pattern per read) would need a 1024-bit read port that the
    device does not have (and its 120 Kbit of block RAM would not hold even one copy).
    Each copy is a :class:`~shiftpool.hw.memories.SinglePortMemory`: on an iCE40
    UltraPlus platform it asks for SPRAM when
    :func:`~shiftpool.hw.spram_choice.spram_memories` picks the tables (all copies fit
    the SPRAMs the weights and indices leave; yosys then maps them to SB_SPRAM256KA
    blocks); otherwise it is block RAM. Half tables are
    two memories of ``16 * pool_size`` entries per lane, always block RAM (a 64-vector
    pair of 16-bit entries is 8 of the UP5K's 30 EBR, so lanes scale; an SPRAM per
    half would hold 16 times what it needs).

    **Pipeline.** Planes are issued LSB first (stage 0: pattern, table address, int8
    term); the table read is synchronous, and the next cycle (stage 1) folds the term
    into a per-beat partial ``h = (h >> 1) + (term << (act_bits - 1))``, which after the
    top plane equals ``sum_b 2**b * term_b`` exactly whatever ``plane_lo`` is (every
    right shift drops only zero bits), then adds ``h`` to the accumulator. No variable
    shifter is needed. The accumulators double as the output register, so a beat's
    final plane waits in stage 1 (read data held) while an earlier result is held on
    ``o``.

    **Precompute mode** (``config.precompute``, ``docs/arithmetic.md`` §12.6). For a
    layer with more filters than pool vectors, the controller sends per output position
    first ``fill_rows * steps`` fill beats (fill row ``k = 0 .. fill_rows - 1`` outer,
    step ``s = 0 .. steps - 1`` inner), then the lane groups as gather beats.

    - A fill beat (``fill``) walks its planes like a lookup beat, but lane ``l`` looks up
      pool vector ``p = fill_row * lanes + l`` instead of ``index[l]``. After its top
      plane the partials ``h`` of all lanes, ``R[step][p] = sum_{b in planes} 2**b *
      LUT[pattern_b][p]`` exactly, are written as one row at ``(step, fill_row)``. It
      leaves the accumulators alone, so it ignores ``first`` and ``last``, produces no
      result and never waits for one (only, like any beat, for an earlier beat that
      does and is still in stage 1).
    - A gather beat (``gather``) is one cycle whatever ``plane_lo`` is: lane ``l`` reads
      row ``(step, index[l] >> log2(lanes))`` of its own copy of the store and adds slot
      ``index[l] % lanes`` of it to its accumulator, as a one-plane lookup beat would
      add its term (``first``, ``last``, waiting under a held result).

    The store is ``lanes`` copies (each lane reads a different row, all are written the
    same row) of ``precompute_steps * fill_rows`` rows of ``lanes`` values of
    :func:`precompute_shape`, simple dual-port memories whose read port is transparent
    to the write port: a gather beat reads (stage 0) in the cycle the fill beat before
    it writes (stage 1), which for one step is the row it needs. The results are
    bit-identical to direct mode (``sw.pool_golden.lut_dot(..., mode="precompute")``).

    **Timing.**

    1. A beat with ``P`` planes offered from cycle ``t0`` while the engine is free is
       accepted (``i.valid & i.ready``) in cycle ``t0 + P - 1``; the payload must stay
       stable until then (stream rules). ``P = act_bits - plane_lo``, or ``P = 1`` for a
       gather beat. Beats offered back to back are processed with no bubble. Free
       means: no table build running or offered, and not held by 3, nor by a result
       held on ``o`` while the previous beat (not a fill beat) has its last plane to
       add to the accumulators.
    2. The result of a beat with ``last`` (not a fill beat) accepted in cycle ``t`` is
       on ``o`` (``o.valid``) from cycle ``t + 2`` until ``o.ready``.
    3. A beat with ``last`` (not a fill beat) is not accepted between the acceptance of
       an earlier beat with ``last`` and the cycle that earlier result is taken
       (``o.valid & o.ready``); it may be accepted in that very cycle.
    4. Idle cycles on ``i`` and back-pressure on ``o`` only delay; nothing is lost.

    Parameters
    ----------
    config : AcceleratorConfig
        With ``engine == "pool"`` (and so ``taps == 8``).

    Members
    -------
    i : In(stream.Signature(pool_input_layout(config)))
        Beats: one group of activations and each lane's pool index or int8 weights.
    o : Out(stream.Signature(engine_output_layout(config)))
        One result per beat with ``last``: the dot products of all lanes.
    build : In(stream.Signature(pool_build_layout(config)))
        Pool vectors to fill the table with.
    """

    #: The ``config.engine`` this engine implements.
    engine = "pool"

    @classmethod
    def code_shape(cls, config: AcceleratorConfig):
        """Shape of one weight of the int8 path."""
        return signed(config.code_width)

    @classmethod
    def input_layout(cls, config: AcceleratorConfig) -> data.StructLayout:
        """:func:`pool_input_layout`."""
        return pool_input_layout(config)

    def __init__(self, config: AcceleratorConfig):
        check_engine_config(self, config)
        self._config = config
        super().__init__(pool_signature(config))

    @property
    def config(self) -> AcceleratorConfig:
        """The configuration the engine was built for."""
        return self._config

    @property
    def table_count(self) -> int:
        """Memories per lane: 1 (full table) or 2 (half tables: low and high nibble)."""
        return 2 if self._config.pool_table == "half" else 1

    @property
    def table_depth(self) -> int:
        """Entries of each of a lane's table memories: ``256 * pool_size`` (full),
        ``16 * pool_size`` (half)."""
        return (1 << (POOL_GROUP // self.table_count)) * self._config.pool_size

    @property
    def lut_depth(self) -> int:
        """Entries of one lane's copy of the table: ``256 * pool_size`` (full),
        ``2 * 16 * pool_size`` (half)."""
        return self.table_count * self.table_depth

    @property
    def build_cycles(self) -> int:
        """Cycles from one pool vector's acceptance on ``build`` to the earliest
        acceptance of the next: one per row of a table, plus one
        (:func:`~shiftpool.hw.program.table_build_cycles`)."""
        return table_build_cycles(self._config)

    def elaborate(self, platform):
        m = Module()
        config = self._config
        top_plane = config.act_bits - 1
        beat = self.i.payload
        new = self.build.payload

        # -- table build: one pattern (per table) per cycle, in Gray-code order -------
        # Full: one table addressed by the 8 pattern bits. Half: two tables, addressed
        # by the low and the high nibble, built side by side from values 0..3 and 4..7.
        parts = self.table_count
        part_bits = POOL_GROUP // parts                 # pattern bits addressing one table
        building = Signal()
        build_index = Signal.like(new.index)
        build_values = Signal.like(new.values)
        build_shift = Signal.like(new.shift)
        count = Signal(part_bits)
        count_next = Signal(part_bits + 1)
        gray = Signal(part_bits)
        flip = Signal(part_bits)                        # the one bit the next pattern flips
        m.d.comb += [
            count_next.eq(count + 1),
            gray.eq(count ^ (count >> 1)),
            flip.eq(gray ^ (count_next ^ (count_next >> 1))),
        ]
        exacts, entries = [], []
        for t in range(parts):
            values = [build_values[t * part_bits + j] for j in range(part_bits)]
            # |E| <= part_bits * 2**(pool_bits - 1): signed(pool_bits + log2(part_bits))
            exact = Signal(signed(config.pool_bits + ceil_log2(part_bits)),
                           name=f"exact{t}")
            step = Signal(signed(config.pool_bits), name=f"step{t}")
            entry = Signal(signed(exact.shape().width + 1), name=f"entry{t}")
            m.d.comb += [
                step.eq(_or_tree(Mux(flip[j], values[j], 0) for j in range(part_bits))),
                # (E + 2**(k-1)) >> k, which is ((2E >> k) + 1) >> 1 for every k >= 0.
                entry.eq((((exact << 1) >> build_shift) + 1) >> 1),
            ]
            exacts.append((exact, step))
            entries.append(entry)

        # -- stage 0: issue one plane of the beat on i -------------------------------
        precompute = config.precompute
        fill = beat.fill if precompute else Const(0, 1)
        gather = beat.gather if precompute else Const(0, 1)
        mid = Signal()                                  # the beat has planes issued
        plane_next = Signal(range(config.act_bits))
        plane = Mux(mid, plane_next, beat.plane_lo)
        # A gather beat is one store read: its only plane is its final one.
        final = (plane == top_plane) | gather
        pattern = Cat(beat.acts[j].bit_select(plane, 1) for j in range(POOL_GROUP))
        result_beat = beat.last & ~fill                 # fill beats produce no result

        # -- stage 1: fold the read term in ------------------------------------------
        s1_valid = Signal()
        s1_start = Signal()                             # the beat's first plane
        s1_final = Signal()                             # the beat's last plane
        s1_first = Signal()
        s1_last = Signal()
        s1_lookup = Signal()
        s1_fill = Signal()
        s1_gather = Signal()

        held = self.o.valid & ~self.o.ready
        # The accumulators are the output register: no commit under a held result. A
        # fill beat writes the store instead, so it never waits.
        stall = s1_valid & s1_final & ~s1_fill & held
        # At most one result pending, from a last beat's acceptance until it is taken.
        last_blocked = result_beat & (held | (s1_valid & s1_final & s1_last))
        build_start = Signal()
        m.d.comb += [
            self.build.ready.eq(~building & ~mid & ~s1_valid),
            build_start.eq(self.build.valid & self.build.ready),
        ]
        # A pool vector on build waits for the beat in flight, then beats wait for it.
        can_issue = ~building & ~(self.build.valid & ~mid) & ~stall
        issue = Signal()
        m.d.comb += [
            self.i.ready.eq(can_issue & final & ~last_blocked),
            issue.eq(self.i.valid & can_issue & ~(final & last_blocked)),
        ]

        with m.If(build_start):
            m.d.sync += [
                building.eq(1),
                build_index.eq(new.index),
                build_values.eq(new.values),
                build_shift.eq(new.shift),
                count.eq(0),
            ]
            m.d.sync += [exact.eq(0) for exact, _ in exacts]
        with m.Elif(building):
            rising = (flip & ~gray).any()
            m.d.sync += count.eq(count_next)
            m.d.sync += [exact.eq(Mux(rising, exact + step, exact - step))
                         for exact, step in exacts]
            with m.If(count == (1 << part_bits) - 1):
                m.d.sync += building.eq(0)

        with m.If(~stall):
            m.d.sync += s1_valid.eq(issue)
        with m.If(issue):
            m.d.sync += [
                s1_start.eq(~mid),
                s1_final.eq(final),
                s1_first.eq(beat.first),
                s1_last.eq(result_beat),
                s1_lookup.eq(beat.lookup),
                s1_fill.eq(fill),
                s1_gather.eq(gather),
                mid.eq(~final),
                plane_next.eq(plane + 1),
            ]

        commit = s1_valid & s1_final & ~s1_fill & ~stall
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(commit & s1_last):
            m.d.sync += self.o.valid.eq(1)

        # -- precompute store: lanes copies of R rows, written by fill beats ---------
        lanes_log2 = ceil_log2(config.lanes)
        rows_log2 = ceil_log2(config.fill_rows)
        if precompute:
            row_layout = data.ArrayLayout(precompute_shape(config), config.lanes)
            store_row = Signal(row_layout)              # R[step][fill_row * lanes + l]
            s1_step = Signal.like(beat.step)
            s1_fill_row = Signal(rows_log2)
            with m.If(issue):
                m.d.sync += [s1_step.eq(beat.step), s1_fill_row.eq(beat.fill_row[:rows_log2])]
            store_write = s1_valid & s1_final & s1_fill

        acc = Signal(engine_output_layout(config))
        m.d.comb += self.o.payload.eq(acc)
        # Half tables are small: they stay in block RAM (hw/spram_choice.py).
        use_spram = "lut" in spram_memories(config)
        term_shape = signed(max(config.entry_bits, _int8_term_shape(config).width))
        for lane in range(config.lanes):
            index = beat.index[lane]
            if precompute:
                # A fill beat's lane l computes R for pool vector fill_row * lanes + l.
                index = Mux(fill, Cat(Const(lane, lanes_log2), beat.fill_row[:rows_log2]),
                            index)
            looked_up = []
            for t in range(parts):
                # One lane's copy of a table: written while building, read while running.
                table = SinglePortMemory(shape=signed(config.lut_bits), depth=self.table_depth,
                                         spram=use_spram)
                m.submodules[f"lut{lane}" if parts == 1 else f"lut{lane}_{t}"] = table
                nibble = pattern[t * part_bits:(t + 1) * part_bits]
                m.d.comb += [
                    # One address for writes and reads: a single-ported RAM holds the copy.
                    table.addr.eq(Mux(building, Cat(build_index, gray), Cat(index, nibble))),
                    table.wr_data.eq(entries[t]),
                    table.wr_en.eq(building),
                    # Low while stalled, so the read data of the waiting plane is held.
                    table.rd_en.eq(issue & ~gather),
                ]
                looked_up.append(table.rd_data)
            # Half tables: the entry is the sum of the two halves (entry_bits wide).
            entry_value = looked_up[0] if parts == 1 else looked_up[0] + looked_up[1]

            term = entry_value
            if config.int8_path:
                int8_term = Signal(_int8_term_shape(config), name=f"int8_term{lane}")
                with m.If(issue):
                    weights = beat.weights[lane]
                    m.d.sync += int8_term.eq(_adder_tree(Mux(pattern[j], weights[j], 0)
                                                         for j in range(POOL_GROUP)))
                term = Mux(s1_lookup, entry_value, int8_term)
            partial = Signal(signed(term_shape.width + config.act_bits), name=f"partial{lane}")
            prev = Mux(s1_start, 0, partial)
            # (prev >> 1) + (term << top_plane): the low top_plane bits need no adder.
            folded = Cat(prev[1:config.act_bits],
                         prev[config.act_bits:].as_signed() + term).as_signed()
            with m.If(s1_valid & ~stall):
                m.d.sync += partial.eq(folded)
            value = folded
            if precompute:
                store = _StoreCopy(row_layout, config.precompute_steps * config.fill_rows)
                m.submodules[f"store{lane}"] = store
                gather_en = issue & gather
                m.d.comb += [
                    store_row[lane].eq(folded),
                    store.write_addr.eq(Cat(s1_fill_row, s1_step)),
                    store.write_data.eq(store_row),
                    store.write_en.eq(store_write),
                    # Row index[l] / lanes of the step; slot index[l] % lanes of it.
                    store.read_addr.eq(Cat(beat.index[lane][lanes_log2:], beat.step)),
                    store.read_en.eq(gather_en),
                ]
                gathered = store.read_data[0]
                if lanes_log2:
                    slot = Signal(lanes_log2, name=f"store_slot{lane}")
                    with m.If(gather_en):
                        m.d.sync += slot.eq(beat.index[lane][:lanes_log2])
                    gathered = store.read_data[slot]
                value = Mux(s1_gather, gathered, folded)
            with m.If(commit):
                m.d.sync += acc[lane].eq(Mux(s1_first, 0, acc[lane]) + value)
        return m


def _or_tree(values):
    """Bitwise OR of ``values`` (at most one of them non-zero: a one-hot selection)."""
    values = list(values)
    while len(values) > 1:
        pairs = [a | b for a, b in zip(values[0::2], values[1::2], strict=False)]
        values = pairs + values[len(pairs) * 2:]
    return values[0]


class _StoreCopy(wiring.Component):
    """One lane's copy of the precompute store: ``depth`` rows of ``row_layout``.

    A simple dual-port RAM: ``write_data`` goes to ``write_addr`` on ``write_en``; a read
    (``read_en``) gives ``read_data`` on the next cycle, held while ``read_en`` is low,
    and transparent to a write of the same row in the same cycle (it gives the new row).
    """

    def __init__(self, row_layout, depth: int):
        self._row_layout = row_layout
        self._depth = depth
        super().__init__({
            "write_addr": In(addr_width(depth)),
            "write_data": In(row_layout),
            "write_en": In(1),
            "read_addr": In(addr_width(depth)),
            "read_en": In(1),
            "read_data": Out(row_layout),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.memory = mem = memory.Memory(shape=self._row_layout, depth=self._depth,
                                                  init=[])
        write = mem.write_port()
        # A gather beat may read, in stage 0, the row the fill beat before it writes from
        # stage 1 in the same cycle.
        read = mem.read_port(transparent_for=(write,))
        m.d.comb += [
            write.addr.eq(self.write_addr),
            write.data.eq(self.write_data),
            write.en.eq(self.write_en),
            read.addr.eq(self.read_addr),
            read.en.eq(self.read_en),
            self.read_data.eq(read.data),
        ]
        return m
