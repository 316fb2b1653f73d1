# amaranth: UnusedElaboratable=no
"""Activation words (``docs/model-format.md``, "activation words"): each activation
buffer is one memory of ``taps``-lane words with one read port, so yosys keeps one
block-RAM copy of it; maps whose channel counts are not multiples of ``taps`` (pad
lanes, grouped and flat maps, max-pool into a dense layer, conv into a dense layer)
stay bit-exact against the golden model with the cycle model's cycles."""

from __future__ import annotations

import re

import numpy as np
import pytest
from amaranth.back import rtlil
from shiftpool.hw.accelerator import Accelerator
from shiftpool.hw.config import AcceleratorConfig
from shiftpool.sw.compile.fit import fit_config
from shiftpool.sw.compile.image import map_layout
from shiftpool.sw.model.randmodel import random_model
from test_accelerator import Case, check_case

_CELL = re.compile(r"cell (\$mem(?:rd|wr)_v2) .*?\n(.*?)\n\s*end", re.S)


def memory_ports(design: str, memory: str) -> dict[str, int]:
    """Read and write port cells of ``memory`` in an RTLIL ``design``."""
    ports = {"$memrd_v2": 0, "$memwr_v2": 0}
    for kind, body in _CELL.findall(design):
        if re.search(rf'MEMID "\\\\{memory}"', body):
            ports[kind] += 1
    return ports


@pytest.mark.parametrize("engine,taps", [("shiftadd", 4), ("int8", 3), ("pool", 8)])
def test_the_activation_buffers_are_one_memory_with_one_read_port(engine, taps):
    cfg = AcceleratorConfig(engine=engine, lanes=2, taps=taps, act_depth=64, weight_depth=16,
                            tap_depth=8, bias_depth=4, program_depth=4, out_depth=8,
                            max_dim=4, max_fan_in=16, index_depth=8, pool_size=4)
    design = rtlil.convert(Accelerator(cfg))
    # both buffers are one memory: the buffer is its top address bit
    assert memory_ports(design, "act_mem") == {"$memrd_v2": 1, "$memwr_v2": 1}
    # The counter is not vacuous: the program memory has its port too.
    assert memory_ports(design, "program_mem")["$memrd_v2"] == 1


@pytest.mark.parametrize("seed", range(6))
def test_channels_not_a_multiple_of_taps(seed):
    """Conv layers of ``taps * q + r`` channels (``0 < r``), then either a max-pool
    into a dense layer (flat max-pool output) or a dense layer straight after a conv
    (flat write-back); random lanes, inputs of several channels."""
    rng = np.random.default_rng(900 + seed)
    taps = int(rng.integers(2, 6))
    lanes = int(rng.integers(1, 5))
    convs = tuple(int(taps * rng.integers(0, 3) + rng.integers(1, taps)) for _ in range(2))
    pool = bool(seed % 2)
    input_shape = (int(rng.integers(1, 2 * taps)), 4 + 2 * int(rng.integers(0, 2)), 4)
    model = random_model(rng, scheme=("flightnn", "int8")[seed % 3 == 0], act_bits=6,
                         k_mode="mixed", input_shape=input_shape, convs=convs, pool=pool,
                         dense=(int(rng.integers(2, 9)),))
    config = fit_config(model, lanes=lanes, taps=taps)
    kinds = [layer.kind for layer in model.layers]
    dense = kinds.index("dense")
    assert map_layout(model, dense) == "flat" and map_layout(model, dense - 1) == "grouped"
    assert any(c % taps for c in convs), convs
    print(f"seed {900 + seed}: taps {taps}, lanes {lanes}, layers {kinds}, convs {convs}")
    check_case(Case(900 + seed, model, config, rng.integers(0, 64, size=(2,) + input_shape),
                    idle_gap=0.3, back_pressure=0.3))


@pytest.mark.parametrize("taps,channels", [(4, 1), (8, 1), (8, 3), (5, 2)])
def test_first_conv_reads_an_im2col_input(taps, channels):
    """A first conv layer with few input channels: the host sends, per position, the
    3x3 neighbourhood of every input channel (zeros outside the image) as 9*C
    channels in grouped words, and the layer takes ceil(9C / taps) steps."""
    from shiftpool.sw.compile.image import compile_model, uses_im2col

    rng = np.random.default_rng(taps * 10 + channels)
    h, w = 3, 4
    model = random_model(rng, scheme="int8", act_bits=8, input_shape=(channels, h, w),
                         convs=(3,), pool=False, dense=(4,))
    assert uses_im2col(model, taps)
    image = compile_model(model, fit_config(model, lanes=2, taps=taps))
    groups = -(-9 * channels // taps)
    assert image.plans[0].steps == groups
    x = rng.integers(1, 256, size=(2, channels, h, w))
    sent = image.input_stream(x)
    sent_lanes = min(9 * channels, taps)  # in_lanes: a word carries only its channels' lanes
    assert sent.shape == (2, groups * h * w * sent_lanes) and image.input_words == sent.shape[1]
    for n in range(2):
        words = sent[n].reshape(groups, h * w, sent_lanes)
        for y, xx, c, ky, kx in np.ndindex(h, w, channels, 3, 3):
            t = c * 9 + ky * 3 + kx
            yy, xs = y + ky - 1, xx + kx - 1
            want = x[n, c, yy, xs] if 0 <= yy < h and 0 <= xs < w else 0
            assert words[t // taps, y * w + xx, t % taps] == want
        # the lanes past the 9*C inputs are 0
        lanes = np.arange(groups * sent_lanes).reshape(groups, 1, sent_lanes)
        assert np.all(words[np.broadcast_to(lanes >= 9 * channels, words.shape)] == 0)


@pytest.mark.parametrize("taps,channels", [(4, 2), (8, 3), (3, 2)])
def test_a_plain_input_sends_only_its_channels_lanes(taps, channels):
    """A grouped first layer (im2col off) of fewer input channels than taps: the host
    sends ``channels`` values per position, not ``taps`` (``in_lanes``), the loader
    fills only those lanes, and the layer reads them as golden says."""
    from shiftpool.sw.compile.image import compile_model

    rng = np.random.default_rng(40 + taps * 10 + channels)
    h, w = 3, 4
    model = random_model(rng, scheme="int8", act_bits=8, input_shape=(channels, h, w),
                         convs=(3,), pool=False, dense=(4,))
    config = fit_config(model, lanes=2, taps=taps)
    image = compile_model(model, config, im2col=False)
    x = rng.integers(1, 256, size=(2, channels, h, w))
    assert image.input_words == channels * h * w
    # position by position, channel by channel: CHW transposed to HWC
    assert np.array_equal(image.input_stream(x), x.reshape(2, channels, -1)
                          .transpose(0, 2, 1).reshape(2, -1))
    check_case(Case(40 + taps, model, config, x, idle_gap=0.3, back_pressure=0.3,
                    im2col=False))
