"""Payloads shared by the controller's units."""

from __future__ import annotations

from amaranth.hdl import Mux, unsigned
from amaranth.lib import data

from ..config import AcceleratorConfig
from ..program import (
    act_words,
    addr_width,
    channel_limit,
    count_width,
    descriptor_fields,
    lane_width,
    round_width,
    row_addr_width,
    struct_layout,
)

__all__ = ["act_word_layout", "bank_mode_layout", "beat_layout", "chan_shape",
           "descriptor_layout", "fill_layout", "group_layout", "readback_status_layout",
           "word_add"]


def act_word_layout(cfg: AcceleratorConfig) -> data.ArrayLayout:
    """One activation word: ``taps`` unsigned activations, lane ``j`` in bits
    ``j*act_bits ..``."""
    return data.ArrayLayout(unsigned(cfg.act_bits), cfg.taps)


def descriptor_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """One layer descriptor (``hw/program.py``'s :func:`descriptor_fields`)."""
    return struct_layout(descriptor_fields(cfg))


def chan_shape(cfg: AcceleratorConfig):
    """A compiled channel index: below the descriptor's ``channels`` plus one group."""
    return unsigned(count_width((1 << count_width(channel_limit(cfg))) + cfg.lanes))


def group_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """What the write-back unit needs about one lane group's result.

    Members
    -------
    chan : compiled channel of lane 0
    two : a two-pass group (its channels are valid below ``channels``, else ``n1``)
    bias : the group's bias row
    addr, lane : activation word and lane of lane 0's output (hidden layers;
        ``docs/model-format.md``, "activation words")
    """
    return data.StructLayout({
        "chan": chan_shape(cfg),
        "two": 1,
        "bias": unsigned(addr_width(cfg.bias_depth)),
        "addr": unsigned(addr_width(act_words(cfg))),
        "lane": unsigned(lane_width(cfg)),
    })


def word_add(cfg: AcceleratorConfig, word, lane, dw, dl, carry):
    """``(word, lane) + (dw, dl)`` in activation words: lanes past ``taps - 1`` wrap
    and add ``carry`` words (the descriptor's ``carry``). Returns ``(word, lane)``
    expressions; ``lane`` and ``dl`` are below ``taps``."""
    total = lane + dl
    over = total >= cfg.taps
    return (word + dw + Mux(over, carry, 0)), Mux(over, total - cfg.taps, total)


def beat_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """One beat in the issue pipeline: the engine flags, the output position the beat
    belongs to (for the padding test and the activation addresses), its weight row,
    and its group's write-back data (meaningful on the beat with ``last``)."""
    fields = {
        "valid": 1,
        "first": 1,
        "last": 1,
        "y": unsigned(count_width(cfg.max_dim)),
        "x": unsigned(count_width(cfg.max_dim)),
        "pos": unsigned(count_width(act_words(cfg))),
        "wrow": unsigned(row_addr_width(cfg)),
        "group": group_layout(cfg),
    }
    if cfg.engine == "binary":
        fields.update(round=unsigned(round_width(cfg)))     # the RBNN round of its weights
    if cfg.precompute:
        # A fill beat (precompute mode) and where its values go: step, row of lanes.
        fields.update(fill=1, step=unsigned(count_width(cfg.tap_depth)),
                      fill_row=unsigned(addr_width(cfg.fill_rows)))
    return data.StructLayout(fields)


def fill_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """One input value the input loader writes: its activation word, lane and value."""
    return data.StructLayout({"addr": unsigned(addr_width(act_words(cfg))),
                              "lane": unsigned(lane_width(cfg)),
                              "act": unsigned(cfg.act_bits)})


def bank_mode_layout() -> data.StructLayout:
    """What the memory bank's activation ports follow: the accelerator is idle and
    loads its input (``loading``), the buffer the layer reads (``src``; it writes the
    other), a max-pool layer (``pool``), the final layer (``last``: its results go to
    the output memory)."""
    return data.StructLayout({"loading": 1, "src": 1, "pool": 1, "last": 1})


def readback_status_layout() -> data.StructLayout:
    """The readback unit's state, for the sequencer: a request addresses the read
    ports in this cycle (``latched``), a request is in progress (``busy``)."""
    return data.StructLayout({"latched": 1, "busy": 1})
