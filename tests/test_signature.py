# amaranth: UnusedElaboratable=no
"""The accelerator's one signature (``shiftpool.hw.signature``): the accelerator has
it, every link faces it flipped, and Verilog keeps the port names the benches use."""

from __future__ import annotations

import re

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Fragment
from shiftpool.hw.accelerator import Accelerator
from shiftpool.hw.config import AcceleratorConfig
from shiftpool.hw.link import LinkConfig, LinkCore, UARTLink
from shiftpool.hw.link.handler import CommandHandler
from shiftpool.hw.signature import AcceleratorSignature

CONFIG = AcceleratorConfig(lanes=2, taps=2, act_depth=64, weight_depth=32, tap_depth=16,
                           bias_depth=8, out_depth=10)


def test_equality_and_repr():
    sig = AcceleratorSignature(CONFIG)
    assert sig == AcceleratorSignature(CONFIG)
    assert sig != AcceleratorSignature(AcceleratorConfig(lanes=3))
    assert sig.flip() == AcceleratorSignature(CONFIG).flip()
    assert sig.config is CONFIG
    assert repr(sig) == f"AcceleratorSignature({CONFIG!r})"
    with pytest.raises(TypeError, match="AcceleratorConfig"):
        AcceleratorSignature({"lanes": 2})


def test_accelerator_and_links_share_it():
    sig = AcceleratorSignature(CONFIG)
    assert Accelerator(CONFIG).signature == sig
    link = LinkConfig()
    for side in (CommandHandler(CONFIG, link), LinkCore(CONFIG, link),
                 UARTLink(CONFIG, link)):
        assert side.signature.members["accelerator"].signature == sig.flip(), side
        Fragment.get(side, None)     # (the parts a link creates must be used)


def test_accelerator_port_names():
    """The names the cocotb benches drive (``sim/bench.py``)."""
    text = rtlil.convert(Accelerator(CONFIG), name="top")
    for name in ("load__valid", "load__ready", "load__payload", "inp__valid", "inp__payload",
                 "out__ready", "out__payload", "cycles", "busy", "readback__req__valid",
                 "readback__resp__payload"):
        assert re.search(rf"wire width \d+ (input|output) \d+\s+\\{name}\n", text), name
