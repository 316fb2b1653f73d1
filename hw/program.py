"""Bit layouts shared by the compiler and the gateware.

The compiler packs layer descriptors, tap-table rows and weight/bias rows into
integers with :func:`pack`; the gateware views the same bits through
:func:`struct_layout`. Both are built from the one field list returned here, so they
cannot disagree. Fields are packed LSB first, in list order (as
``amaranth.lib.data.StructLayout`` does).
"""

from __future__ import annotations

from .config import POOL_GROUP, AcceleratorConfig, ceil_log2

__all__ = [
    "KIND_MAC", "KIND_POOL", "REGIONS", "channel_limit", "group_limit", "descriptor_fields",
    "tap_fields",
    "offset_width", "row_addr_width", "pool_row_fields", "lut_shift_width",
    "addr_width", "pack", "unpack", "field_width", "struct_layout", "POOL_WINDOW",
    "pool_phases", "flat_phases", "act_words", "lane_width", "table_build_cycles",
    "generate_fields", "mlg_a_depth", "act_memory_depth", "PROGRAM_WORD", "descriptor_words",
    "descriptor_to_words", "words_to_descriptors",
]

KIND_MAC = 0
KIND_POOL = 1

#: Load regions of the accelerator, in the order of their numeric codes. ``indices``
#: (pool indices) and ``pool`` (the weight pool) exist only in the pool engine's
#: accelerator, the ``mlg_*`` stores of the weight generator only in the in-situ
#: engine's (which has no ``weights`` region: it generates them); the others have
#: them with depth 0.
REGIONS = ("program", "taps", "weights", "bias", "indices", "pool", "mlg_v", "mlg_u", "mlg_b",
           "mlg_w1")

#: Words in a max-pool window (2x2).
POOL_WINDOW = 4


def addr_width(depth: int) -> int:
    """Address bits for a memory of ``depth`` words (at least one)."""
    return max(1, ceil_log2(depth))


def count_width(limit: int) -> int:
    """Bits to hold a count ``0 .. limit``."""
    return max(1, ceil_log2(limit + 1))


def pool_phases(cfg: AcceleratorConfig) -> int:
    """Read cycles per max-pool output word: 4 (the window's four words through the
    activation buffer's one read port)."""
    return POOL_WINDOW


def flat_phases(cfg: AcceleratorConfig) -> int:
    """Cycles per max-pool window when the output is flat: ``max(4, taps)`` (the
    window's four reads, and the ``taps`` lane writes of the previous window's maxima,
    which overlap the next window's reads)."""
    return max(POOL_WINDOW, cfg.taps)


def act_words(cfg: AcceleratorConfig) -> int:
    """Rows of each activation buffer: ``ceil(act_depth / taps)`` words of ``taps``
    activations (lanes) each."""
    return -(-cfg.act_depth // cfg.taps)


def act_memory_depth(cfg: AcceleratorConfig) -> int:
    """Rows of the one memory that holds both activation buffers: buffer ``b``'s word
    ``w`` at row ``b * 2**addr_width(act_words) + w``."""
    return 2 << addr_width(act_words(cfg))


def lane_width(cfg: AcceleratorConfig) -> int:
    """Bits of a lane index ``0 .. taps - 1`` within an activation word."""
    return addr_width(cfg.taps)


#: Engines whose terms are registered and whose adders are cut into pipeline stages
#: (``hw/engines/common.AccumulatingEngine``): the shift-add and binary engines. The
#: multiplier engines (int8, in-situ), whose products map onto DSP blocks, add a beat
#: in the cycle it is taken; the pool engine has its own schedule.
PIPELINED_ENGINES = ("shiftadd", "binary")
#: Adders in series per pipeline stage of a pipelined engine.
ADDERS_PER_STAGE = 2


def engine_stages(cfg: AcceleratorConfig) -> int:
    """Register stages between an engine's input and its accumulators: for a pipelined
    engine (:data:`PIPELINED_ENGINES`) the terms' register and one more per
    :data:`ADDERS_PER_STAGE` adders in series after it but the last
    (``ceil(log2(taps))`` tree levels, then the accumulator's adder); 0 otherwise.
    On an iCE40 UltraPlus a shift-add term and three adders in series reach about 46
    MHz at 2 lanes x 4 taps, the engine alone placed and routed; the unpipelined
    engine 25."""
    if cfg.engine not in PIPELINED_ENGINES:
        return 0
    adders = (cfg.taps - 1).bit_length() + 1
    return 1 + (adders - 1) // ADDERS_PER_STAGE


def table_build_cycles(cfg: AcceleratorConfig) -> int:
    """Pool engine: cycles from the acceptance of one pool row (a table column build) to
    the earliest acceptance of the next load row: one per row of a table, ``256`` (full
    table) or ``16`` (half tables, both halves written side by side), plus one."""
    rows = 1 << (POOL_GROUP // 2 if cfg.pool_table == "half" else POOL_GROUP)
    return rows + 1


def channel_limit(cfg: AcceleratorConfig) -> int:
    """Most channels (and lane groups) a layer can have: a hidden layer's feature map
    fits ``act_depth`` words, the output layer's outputs ``out_depth`` words."""
    return max(cfg.act_depth, cfg.out_depth)


def group_limit(cfg: AcceleratorConfig) -> int:
    """Most lane groups of one kind (one-pass or two-pass) a layer can have:
    ``ceil(channel_limit / lanes)``."""
    return -(-channel_limit(cfg) // cfg.lanes)


def offset_width(cfg: AcceleratorConfig) -> int:
    """Signed width of a tap's word offset ``g*H*W + dy*W + dx``."""
    return count_width(act_words(cfg) + cfg.max_dim + 1) + 1


def row_addr_width(cfg: AcceleratorConfig) -> int:
    """Address bits of a weight row: of the weight memory, or for the pool engine of
    the larger of the weight and index memories (a layer reads one of them)."""
    depth = cfg.weight_depth
    if cfg.engine == "pool":
        depth = max(depth, cfg.index_depth)
    return addr_width(depth)


def round_width(cfg: AcceleratorConfig) -> int:
    """Bits of an RBNN round number, ``0 .. slot_bits - 1`` (binary engine)."""
    return max(1, ceil_log2(cfg.slot_bits))


def descriptor_fields(cfg: AcceleratorConfig) -> list[tuple[str, int]]:
    """Fields of one layer descriptor (see ``docs/model-format.md``, "layer program").

    The pool engine's descriptors end with two more: ``lookup`` (the layer's rows are
    pool indices read from the index memory, else int8 weights from the weight
    memory) and ``plane_lo`` (the lowest activation bit-plane processed: the run-time
    precision is ``act_bits - plane_lo`` bits); with a precompute store, a third:
    ``fill_groups`` (``pool_size / lanes`` for a layer in precompute mode, else 0).
    The binary engine's end with ``round``, ``round_steps`` and ``out_base`` (RBNN
    rounds), the in-situ engine's with its generate phase's fields
    (:func:`generate_fields`).
    """
    dim = count_width(cfg.max_dim)
    addr = count_width(cfg.act_depth)
    words = count_width(act_words(cfg))
    lane = lane_width(cfg)
    # Channel and group counts: a hidden layer's are bounded by act_depth, the output
    # layer's by out_depth.
    chans = count_width(channel_limit(cfg))
    groups = count_width(group_limit(cfg))
    return [
        # layer 0: lanes of each input word the host sends (the input loader's count);
        # first, so that it is in the descriptor's first program word
        ("in_lanes", count_width(cfg.taps)),
        ("kind", 1),            # KIND_MAC or KIND_POOL
        ("last", 1),            # final layer: results go to the output memory
        ("src", 1),             # activation buffer read; the other one is written
        ("shift", count_width(cfg.max_shift)),
        ("height", dim),        # MAC: output rows (1 for dense); pool: output rows
        ("width", dim),         # MAC: output columns (1 for dense); pool: output columns
        ("in_width", dim),      # pool: input columns
        ("area", addr),         # MAC: height*width positions
        ("steps", count_width(cfg.tap_depth)),      # tap rows per pass
        ("tap_base", addr_width(cfg.tap_depth)),
        ("weight_base", row_addr_width(cfg)),
        ("bias_base", addr_width(cfg.bias_depth)),
        ("groups1", groups),    # lane groups taking one pass
        ("groups2", groups),    # lane groups taking two passes (after the one-pass ones)
        ("n1", chans),          # channels in one-pass groups
        ("channels", chans),    # MAC: output channels; pool: channels (flat) or groups
        # Where the layer's outputs go in the activation buffer (docs/model-format.md,
        # "activation words"): a word offset and a lane offset, added with a carry of
        # `carry` words when the lanes pass `taps`.
        ("flat", 1),            # the output map is stored flat (a dense layer reads it)
        ("carry", words),       # words a lane carry adds: area (grouped) or 1 (flat)
        ("lane_w", words),      # one channel further: + (lane_w, lane_l)
        ("lane_l", lane),
        ("group_w", count_width(cfg.lanes * act_words(cfg))),   # one lane group further
        ("group_l", lane),
        ("n1_w", words),        # the first two-pass channel n1
        ("n1_l", lane),
        # pool: input words skipped at the end of an output row (W or W + 1) and at the
        # end of a channel (0 or W)
        ("row_skip", count_width(cfg.max_dim + 1)),
        ("chan_skip", dim),
    ] + ([
        ("lookup", 1),
        ("plane_lo", addr_width(cfg.act_bits)),
    ] if cfg.engine == "pool" else []) + ([
        ("fill_groups", count_width(cfg.fill_rows)),
    ] if cfg.precompute else []) + ([
        # RBNN rounds (docs/model-format.md §2.12): the round of the layer's first step,
        # steps per round (0: one round; else the weight rows restart every
        # `round_steps` steps with the next round), and the first output word.
        ("round", round_width(cfg)),
        ("round_steps", count_width(cfg.tap_depth)),
        ("out_base", words),
    ] if cfg.engine == "binary" else []) + (generate_fields(cfg) if cfg.engine == "insitu" else [])


def mlg_a_depth(cfg: AcceleratorConfig) -> int:
    """In-situ engine: rows an MLG request's ``a_addr`` reaches, of the deeper of the
    generator's ``u`` and ``w1`` stores (``hw/generator_layout.py``)."""
    return max(cfg.mlg_u_depth, cfg.mlg_w1_depth)


def generate_fields(cfg: AcceleratorConfig) -> list[tuple[str, int]]:
    """The layer-descriptor fields of an MLG layer's generate phase (in-situ engine
    only; ``hw/controller/generate.py`` turns them into requests, ``docs/model-format.md``
    §2.13): the levels and step kind, ``Bc``, the layer's first ``v``, ``a`` (``u`` or
    ``w1``) and ``b`` rows, the ``a`` rows per basis (``a_stride``) and per lane group
    (``a_group``, 0 with level 2)."""
    a = mlg_a_depth(cfg)
    return [
        ("gen_level1", 1),
        ("gen_level2", 1),
        ("gen_grouped", 1),
        ("gen_bc", count_width(max(cfg.mlg_bc, cfg.lanes))),
        ("gen_v_base", addr_width(cfg.mlg_v_depth)),
        ("gen_a_base", addr_width(a)),
        ("gen_a_stride", count_width(a)),
        ("gen_a_group", count_width(a)),
        ("gen_b_base", addr_width(cfg.mlg_b_depth)),
    ]



def lut_shift_width(cfg: AcceleratorConfig) -> int:
    """Bits of a lookup table's narrowing shift, ``0 .. pool_bits + 3`` (a shift of
    ``pool_bits + 3`` already turns every entry of 8 pool values into 0 or -1)."""
    return count_width(cfg.pool_bits + 3)


def pool_row_fields(cfg: AcceleratorConfig) -> list[tuple[str, int]]:
    """Fields of one row of the pool region: the pool vector's 8 signed values ``v0``
    .. ``v7`` (``v0`` goes with pattern bit 0) and the lookup table's narrowing shift."""
    return [(f"v{j}", cfg.pool_bits) for j in range(POOL_GROUP)] + [
        ("shift", lut_shift_width(cfg))]


def tap_fields(cfg: AcceleratorConfig) -> list[tuple[str, int]]:
    """Fields of one tap-table row (one step): the word it reads (``offset`` from the
    position's word, the kernel offset ``dy``, ``dx`` for the padding test) and
    ``mask``, the lanes of that word that are real inputs (bit ``j``: lane ``j``; the
    others read as 0)."""
    return [("offset", offset_width(cfg)), ("dy", 2), ("dx", 2), ("mask", cfg.taps)]


def field_width(fields: list[tuple[str, int]]) -> int:
    return sum(w for _, w in fields)


#: Bits of one row of the program region: a descriptor is ``descriptor_words`` rows
#: (one block RAM holds 256 of them, where a whole descriptor per row took one block
#: RAM per 16 bits of it).
PROGRAM_WORD = 16


def descriptor_words(cfg: AcceleratorConfig) -> int:
    """Program rows (words of :data:`PROGRAM_WORD` bits) of one descriptor."""
    return -(-field_width(descriptor_fields(cfg)) // PROGRAM_WORD)


def descriptor_to_words(cfg: AcceleratorConfig, descriptor: int) -> list[int]:
    """The program rows of a packed descriptor: its bits ``16k ..`` in row ``k``."""
    mask = (1 << PROGRAM_WORD) - 1
    return [(descriptor >> (PROGRAM_WORD * k)) & mask for k in range(descriptor_words(cfg))]


def words_to_descriptors(cfg: AcceleratorConfig, words: list[int]) -> list[int]:
    """The packed descriptors of program rows ``words`` (inverse of
    :func:`descriptor_to_words`, descriptor after descriptor)."""
    n = descriptor_words(cfg)
    if len(words) % n:
        raise ValueError(f"{len(words)} program rows are not whole descriptors of {n} rows")
    return [sum(int(w) << (PROGRAM_WORD * k) for k, w in enumerate(words[i:i + n]))
            for i in range(0, len(words), n)]


def pack(fields: list[tuple[str, int]], values: dict) -> int:
    """Pack ``values`` (missing fields are 0, negatives two's complement)."""
    unknown = set(values) - {n for n, _ in fields}
    if unknown:
        raise KeyError(f"unknown field(s) {sorted(unknown)}")
    word, pos = 0, 0
    for name, width in fields:
        v = int(values.get(name, 0))
        if not -(1 << (width - 1)) <= v < (1 << width):
            raise ValueError(f"field {name!r} = {v} does not fit in {width} bits")
        word |= (v & ((1 << width) - 1)) << pos
        pos += width
    return word


def unpack(fields: list[tuple[str, int]], word: int, signed=()) -> dict:
    """Inverse of :func:`pack`; fields named in ``signed`` are sign-extended."""
    out, pos = {}, 0
    for name, width in fields:
        v = (word >> pos) & ((1 << width) - 1)
        if name in signed and v >> (width - 1):
            v -= 1 << width
        out[name] = v
        pos += width
    return out


def struct_layout(fields, signed=()):
    """The ``amaranth.lib.data.StructLayout`` of a field list."""
    from amaranth.hdl import signed as signed_shape
    from amaranth.lib import data

    return data.StructLayout({
        name: (signed_shape(width) if name in signed else width) for name, width in fields
    })
