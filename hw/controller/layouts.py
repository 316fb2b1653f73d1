"""Payloads shared by the controller's units."""

from __future__ import annotations

from amaranth.hdl import unsigned
from amaranth.lib import data

from ..config import AcceleratorConfig
from ..program import (
    addr_width,
    channel_limit,
    count_width,
    descriptor_fields,
    row_addr_width,
    struct_layout,
)

__all__ = ["beat_layout", "chan_shape", "descriptor_layout", "group_layout"]


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
    addr : activation address of lane 0's output, ``chan * area + pos`` (hidden layers)
    """
    return data.StructLayout({
        "chan": chan_shape(cfg),
        "two": 1,
        "bias": unsigned(addr_width(cfg.bias_depth)),
        "addr": unsigned(addr_width(cfg.act_depth)),
    })


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
        "pos": unsigned(count_width(cfg.act_depth)),
        "wrow": unsigned(row_addr_width(cfg)),
        "group": group_layout(cfg),
    }
    if cfg.precompute:
        # A fill beat (precompute mode) and where its values go: step, row of lanes.
        fields.update(fill=1, step=unsigned(count_width(cfg.tap_depth)),
                      fill_row=unsigned(addr_width(cfg.fill_rows)))
    return data.StructLayout(fields)
