"""The cycle model: the accelerator's cycles per inference, predicted exactly.

It is derived from the controller's schedule in ``hw/accelerator.py``; the
integration tests check it against the RTL's cycle counter on every run.

Each layer begins with :func:`fetch_cycles` = ``P + 1`` FETCH cycles, in which the
sequencer reads its descriptor's ``P`` program rows (``hw/program.descriptor_words``),
then its DECODE. Schedule of one layer from then on, cycle 0 being its DECODE:

MAC layer
    From cycle 1 the issue stage offers one beat (one weight row) per cycle, position
    by position, group by group, pass by pass, step by step, with no gap in between.
    A beat enters the engine :data:`ISSUE_LATENCY` = 3 cycles after it is issued
    (tap rows and weight rows are read, then the activations, then both are
    registered); a pipelined engine's ``S = engine_stages(cfg)`` register stages
    (``hw/program.py``: the shift-add and binary engines) freeze with the issue
    pipeline and add ``S`` to that latency. Number the lane groups of
    the whole layer ``j = 0 .. area*groups - 1``; group ``j`` has ``R_j`` beats
    (``steps`` or ``2*steps``) and ``V_j`` valid lanes (channels below its limit),
    which the write-back unit writes in ``W_j`` writes: ``W_j = V_j`` (one lane per
    write), or where it writes a word's lanes at once (:func:`word_writes`:
    ``writeback = "word"``, a hidden layer, one channel further is one lane further)
    the words they go to, ``W_j = ceil((c_j0 % taps + V_j) / taps)`` for a group
    whose lane 0 is channel ``c_j0`` (a grouped map, or a flat one of one position,
    puts it in lane ``c_j0 % taps``). The write-back unit captures group ``j``'s result
    at cycle ``c_j`` and selects its writes at ``c_j + 1 .. c_j + W_j`` (each is
    written two cycles later, after a bias-add and a requantize register); it can
    capture the next result while selecting its last write, at ``c_j + W_j``. Until
    then the result waits in the engine and the issue pipeline is frozen, so the first
    beat of group ``j + 1`` enters the engine exactly at ``c_j``, its last at ``c_j +
    R_{j+1} - 1``, and its result is presented one cycle later::

        c_0 = 1 + ISSUE_LATENCY + S + R_0
        c_j = max(c_{j-1} + R_j, c_{j-1} + W_{j-1}) = c_{j-1} + max(R_j, W_{j-1})

    The layer ends with its last write at ``c_last + W_last + 2`` and takes
    ``c_last + W_last + 3`` cycles. Groups repeat identically at every position, so
    the sum over ``j`` is ``area`` times the sum over one position's groups, with the
    last group of the previous position before the first.
Max-pool layer
    ``N = ceil(C / taps) * H * W`` windows of words (``H, W`` the output sides), read
    through the buffer's one read port, a window's four words in four cycles, from
    cycle 1. When the next layer reads a grouped map, the window's word of maxima is
    written one cycle after its last read: ``4*N + 2`` cycles. When it reads a flat
    map (a dense layer), a window takes ``P = max(4, taps)`` cycles and its ``V``
    channels (``taps``, or ``C - (ceil(C/taps) - 1)*taps`` in the last group) are
    written one per cycle from the second cycle after its last read; the layer ends
    with the last write or when the reads end: ``max(1 + N*P, 5 + (N - 1)*P + V_last)
    + 1`` cycles.

The counter covers the program from the first FETCH to the final layer's last
write, so an inference takes the sum of its layers' cycles, FETCH included.

Binary engine (RBNN, ``docs/model-format.md`` §2.12)
    An RBNN hidden layer runs as one descriptor per round, each a MAC layer of its
    own (its FETCH and DECODE included); the output layer is one MAC layer of ``rounds *
    ceil(H / taps)`` steps, whose weight-row restarts cost no cycle.

Pool engine (``hw/engines/pool.py``)
    A beat takes ``P = act_bits - plane_lo`` cycles (one per bit-plane; ``P =
    act_bits`` for the int8 layers of a pool model), a result is presented two cycles
    after its last beat was accepted, and a beat waits in the engine rather than in
    the issue pipeline, so the recurrence is kept per beat (:func:`_pool_mac_cycles`):
    a beat's planes start at ``t`` (the first beat of a layer at cycle 4), its final
    plane goes at ``f = t + P - 1``. While the previous result is on the engine's
    output (until its capture ``c_prev``), a beat's final plane cannot complete: a
    beat with ``last`` is accepted at ``a = max(f, c_prev)`` and the next beat starts
    at ``a + 1``; another beat's final plane completes at ``max(f + 1, c_prev)``,
    when the next one starts. Group ``j``'s result is captured at ``c_j = max(a_j + 2,
    c_{j-1} + W_{j-1})``; the layer takes ``c_last + W_last + 3`` cycles.

    Precompute mode: each position starts with ``(pool_size / lanes) * steps`` fill
    beats of ``P`` cycles (they store values, produce no result and wait for none),
    and the groups' beats then take one cycle each (a store read instead of ``P``
    table reads).

In-situ engine (MLG, ``hw/controller/generate.py``)
    A MAC layer first generates its weight rows: from cycle 1 the generator takes a
    request (one row: lane group ``g``, step ``s``) every ``count_g + GEN_LATENCY``
    cycles (``count_g = Bc`` with level 2, else the group's valid lanes) and the last
    row is written ``count + GEN_LATENCY`` cycles after its request, so the phase takes
    ``G = steps * sum_g (count_g + GEN_LATENCY)`` cycles after DECODE
    (:func:`generate_cycles`); the layer's MAC schedule above then starts ``G + 1``
    cycles later than a layer of another engine.

Loading a pool model (not part of an inference's count)
    Each row of the ``pool`` region builds one column of the lookup table: the load
    port takes nothing for ``B = table_build_cycles(cfg)`` cycles after a pool row (257
    with the full table, 17 with half tables), so the row offered in cycle ``o_r`` is
    taken in cycle ``a_r = max(o_r, a_{r-1} + B)`` (:func:`pool_row_accepts`), and the
    whole table is built in ``rows * (B - 1)`` cycles of writing (:func:`build_cycles`).
"""

from __future__ import annotations

from ...hw.config import AcceleratorConfig
from ...hw.generator_layout import row_cycles
from ...hw.program import (
    descriptor_words,
    engine_stages,
    flat_phases,
    pool_phases,
    table_build_cycles,
)
from .image import Image, MacPlan, map_layout

__all__ = ["ISSUE_LATENCY", "generate_cycles", "group_shapes", "layer_cycles", "inference_cycles",
           "build_cycles", "pool_row_accepts", "table_build_cycles", "word_writes",
           "writeback_stalls"]

#: Cycles from a beat's issue until it enters the engine.
ISSUE_LATENCY = 3


def group_shapes(plan: MacPlan, channels: int, lanes: int,
                 taps: int | None = None) -> list[tuple[int, int]]:
    """``(beats, writes)`` of each lane group of one position, in issue order: the
    group's valid lanes, or with ``taps`` (a layer whose lanes the write-back unit writes
    a word at a time, :func:`word_writes`) the activation words they go to."""
    one = [(plan.steps, g * lanes, min(lanes, plan.n1 - g * lanes)) for g in range(plan.groups1)]
    two = [(2 * plan.steps, plan.n1 + g * lanes, min(lanes, channels - plan.n1 - g * lanes))
           for g in range(plan.groups2)]
    if taps is None:
        return [(r, v) for r, _, v in one + two]
    # Lane 0 of channel c's group sits in lane c % taps of its word (grouped maps, and
    # flat maps of one position).
    return [(r, -(-(c % taps + v) // taps)) for r, c, v in one + two]


def word_writes(image: Image, i: int) -> bool:
    """Whether the write-back unit writes MAC layer ``i``'s lanes a word at a time:
    ``writeback = "word"``, a hidden layer, and one channel further is one lane further
    (a channel-grouped output, or a flat one of one position)."""
    cfg = image.config
    if cfg.writeback != "word" or cfg.taps == 1 or i == len(image.model.layers) - 1:
        return False
    return (map_layout(image.model, i + 1, image.im2col) != "flat"
            or image.plans[i].area == 1)


def writeback_stalls(image: Image) -> bool:
    """Whether some MAC layer of ``image`` waits for its write-back unit: a group whose
    beats take fewer cycles than the writes of the group before it (``R_j < W_{j-1}``;
    the pool engine's beats take a cycle per bit-plane, in direct mode)."""
    cfg = image.config
    for i, (layer, plan) in enumerate(zip(image.model.layers, image.plans, strict=True)):
        if plan is None:
            continue
        taps = cfg.taps if word_writes(image, i) else None
        shapes = group_shapes(plan, layer.out_shape[0] // plan.descriptors, cfg.lanes, taps)
        beat = 1
        if cfg.engine == "pool" and image.modes.get(i) != "precompute":
            beat = image.planes.get(i, cfg.act_bits) if layer.is_pool else cfg.act_bits
        rows = [r * beat for r, _ in shapes]
        writes = [w for _, w in shapes]
        before = writes[-1:] + writes[:-1] if plan.area > 1 else [0] + writes[:-1]
        if any(r < w for r, w in zip(rows, before, strict=True)):
            return True
    return False


def _mac_cycles(plan: MacPlan, channels: int, lanes: int, taps: int | None = None,
                stages: int = 0) -> int:
    """A MAC layer of an accumulating engine with ``stages`` register stages
    (:func:`~shiftpool.hw.program.engine_stages`): they move with the issue pipeline,
    so they add to its latency; ``taps`` as :func:`group_shapes` takes it."""
    shapes = group_shapes(plan, channels, lanes, taps)
    rows = [r for r, _ in shapes]
    writes = [w for _, w in shapes]
    # sum over one position of max(R_j, W_{j-1}), W_{-1} being the previous position's
    # last group; the layer's very first group has no predecessor instead.
    per_position = sum(max(r, w) for r, w in zip(rows, writes[-1:] + writes[:-1], strict=True))
    last_capture = (1 + ISSUE_LATENCY + stages + rows[0]
                    + plan.area * per_position - max(rows[0], writes[-1]))
    return last_capture + writes[-1] + 3


def _pool_mac_cycles(plan: MacPlan, channels: int, lanes: int, planes: int,
                     fill_beats: int = 0, taps: int | None = None) -> int:
    """A pool-engine MAC layer; ``fill_beats`` per position in precompute mode, whose
    gather beats then take one cycle each; ``taps`` as :func:`group_shapes` takes it."""
    shapes = group_shapes(plan, channels, lanes, taps)
    beat = 1 if fill_beats else planes
    t = 1 + ISSUE_LATENCY               # the first beat's first plane
    capture, free = 0, 0                # last capture, when the write-back can next capture
    for _ in range(plan.area):
        # Fill beats store values instead of accumulating: they never wait for a result.
        t += fill_beats * planes
        for rows, valid in shapes:
            for _ in range(rows - 1):
                t = max(t + beat, capture)
            accept = max(t + beat - 1, capture)
            capture = max(accept + 2, free)
            free = capture + valid
            t = accept + 1
    return free + 3


def generate_cycles(cfg: AcceleratorConfig, layer, plan: MacPlan) -> int:
    """In-situ engine: cycles of an MLG layer's generate phase, from the cycle after its
    DECODE to the write of its last row (module docstring)."""
    co = layer.out_shape[0]
    counts = [layer.mlg_v.shape[1] if layer.mlg_v is not None else min(cfg.lanes, co - c0)
              for c0 in range(0, co, cfg.lanes)]
    return plan.steps * sum(row_cycles(c) for c in counts)


def fetch_cycles(cfg: AcceleratorConfig) -> int:
    """Cycles the sequencer's FETCH takes before a descriptor's DECODE: one per program
    row of it, and one for the read port's latency."""
    return descriptor_words(cfg) + 1


def layer_cycles(image: Image) -> list[int]:
    """Cycles of each layer of ``image``'s program, its FETCH and DECODE included."""
    return [cycles + fetch_cycles(image.config) * descriptors
            for cycles, descriptors in zip(_decoded_cycles(image), _descriptors(image),
                                           strict=True)]


def _descriptors(image: Image) -> list[int]:
    """Descriptors each layer runs as (an RBNN hidden layer: one per round)."""
    return [plan.descriptors if plan is not None else 1 for plan in image.plans]


def _decoded_cycles(image: Image) -> list[int]:
    """Cycles of each layer from its (first) DECODE on."""
    cfg = image.config
    out = []
    for i, (layer, plan) in enumerate(zip(image.model.layers, image.plans, strict=True)):
        taps = cfg.taps if plan is not None and word_writes(image, i) else None
        if plan is None:
            c, h, w = layer.out_shape
            groups = -(-c // cfg.taps)
            windows = groups * h * w
            if map_layout(image.model, i + 1, image.im2col) == "flat":
                period = flat_phases(cfg)
                last_lanes = c - (groups - 1) * cfg.taps
                out.append(max(1 + windows * period,
                               5 + (windows - 1) * period + last_lanes) + 1)
            else:
                out.append(1 + windows * pool_phases(cfg) + 1)
        elif cfg.engine == "pool":
            planes = image.planes.get(i, cfg.act_bits) if layer.is_pool else cfg.act_bits
            fill = cfg.fill_rows * plan.steps if image.modes.get(i) == "precompute" else 0
            out.append(_pool_mac_cycles(plan, layer.out_shape[0], cfg.lanes, planes, fill,
                                        taps))
        else:
            # An RBNN hidden layer runs as one descriptor per round, each a layer of its own.
            per = plan.descriptors
            cycles = per * _mac_cycles(plan, layer.out_shape[0] // per, cfg.lanes, taps,
                                       engine_stages(cfg))
            if cfg.engine == "insitu":
                cycles += generate_cycles(cfg, layer, plan) + 1
            out.append(cycles)
    return out


def inference_cycles(image: Image) -> int:
    """Cycles the accelerator's counter reports for one inference."""
    return sum(layer_cycles(image))


def build_cycles(image: Image) -> int:
    """Cycles the pool engine spends writing its lookup table while ``image`` loads:
    ``table_build_cycles - 1`` per pool row (0 for other engines)."""
    if image.config.engine != "pool":
        return 0
    return len(image.regions["pool"]) * (table_build_cycles(image.config) - 1)


def pool_row_accepts(cfg: AcceleratorConfig, offers: list[int]) -> list[int]:
    """The cycles at which the accelerator takes consecutive pool rows offered (valid
    raised) in cycles ``offers``, the first after any earlier build is done:
    ``a_0 = o_0``, ``a_r = max(o_r, a_{r-1} + table_build_cycles(cfg))``."""
    accepts: list[int] = []
    for offer in offers:
        accepts.append(offer if not accepts
                       else max(offer, accepts[-1] + table_build_cycles(cfg)))
    return accepts
