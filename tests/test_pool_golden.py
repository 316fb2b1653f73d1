"""The bit-serial weight-pool golden model (``shiftpool.sw.schemes.pool_golden``, and
``golden.run`` on pool models) against references written here: the LUT by brute
force, dot products with plain integer weights, truncated activations, and the
worked example of docs/arithmetic.md §12.10."""

from __future__ import annotations

import numpy as np
import pytest
from shiftpool.sw.model.file import Layer, ModelError, QuantModel
from shiftpool.sw.model.randmodel import random_model
from shiftpool.sw.schemes import golden, pool_golden

# -- references (plain Python ints and loops) ------------------------------------------


def brute_lut(pool) -> list:
    """``LUT[pattern][p]`` by the definition, one entry at a time."""
    return [[sum(int(pool[p][j]) for j in range(8) if (pattern >> j) & 1)
             for p in range(len(pool))] for pattern in range(256)]


def reconstruct(index: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """The integer weights of a pool layer, by loops (docs/arithmetic.md §12.2)."""
    if index.ndim == 2:
        co, groups = index.shape
        w = np.zeros((co, 8 * groups), dtype=np.int64)
        for f in range(co):
            for g in range(groups):
                for j in range(8):
                    w[f, 8 * g + j] = pool[index[f, g]][j]
        return w
    co, groups = index.shape[:2]
    w = np.zeros((co, 8 * groups, 3, 3), dtype=np.int64)
    for f in range(co):
        for g in range(groups):
            for ky in range(3):
                for kx in range(3):
                    for j in range(8):
                        w[f, 8 * g + j, ky, kx] = pool[index[f, g, ky, kx]][j]
    return w


def truncate(a: np.ndarray, act_bits: int, bits: int) -> np.ndarray:
    """Activations with the low ``act_bits - bits`` bits cleared."""
    drop = act_bits - bits
    return (np.asarray(a, dtype=np.int64) >> drop) << drop


def reference_run(model: QuantModel, x: np.ndarray, bits: int | None = None) -> np.ndarray:
    """A pool model as a plain integer model: reconstructed weights, ordinary
    conv/dense (golden.conv3x3 is checked against loops in test_golden.py), pool
    layers fed truncated activations. Valid for an exact LUT."""
    a = np.asarray(x, dtype=np.int64)
    for layer in model.layers:
        if layer.kind == "maxpool2":
            a = golden.maxpool2(a)
            continue
        if layer.index is not None:
            w = reconstruct(np.asarray(layer.index), model.pool)
            if bits is not None:
                a = truncate(a, model.act_bits, bits)
        else:
            w = np.asarray(layer.weight, dtype=np.int64)
        if layer.kind == "conv3x3":
            v = golden.conv3x3(a, w) + layer.bias[None, :, None, None]
        else:
            v = a.reshape(len(a), -1) @ w.T + layer.bias[None, :]
        a = golden.requantize(v, int(layer.shift), model.act_bits) if layer.relu else v
    return a


def random_pool(rng, size, pool_bits):
    top = (1 << (pool_bits - 1)) - 1
    pool = rng.integers(-top, top + 1, size=(size, 8))
    pool[0] = top           # the extremes of the exact LUT are reached
    pool[-1] = -top
    return pool


def pool_case(seed: int, lut_bits: int = 16, pool_bits: int | None = None) -> QuantModel:
    """A random pool model: pooled conv (8 or 16 channels in), a second conv that is
    pooled (8 channels in) or int8 (3 channels in), a max-pool, a pooled dense layer."""
    rng = np.random.default_rng(seed)
    act_bits = int(rng.integers(2, 9))
    channels = int(rng.choice([8, 16]))
    pool_bits = int(rng.integers(2, 10)) if pool_bits is None else pool_bits
    return random_model(rng, scheme="pool", act_bits=act_bits,
                        input_shape=(channels, int(rng.integers(2, 6)), int(rng.integers(2, 6))),
                        convs=(int(rng.choice([3, 8])), 8), pool=True, dense=(3,),
                        pool_size=int(rng.choice([2, 16, 64, 300])), pool_bits=pool_bits,
                        lut_bits=lut_bits)


def random_inputs(rng, model, n=4):
    hi = (1 << model.act_bits) - 1
    x = rng.integers(0, hi + 1, size=(n, *model.input_shape))
    return np.where(rng.random(x.shape) < 0.2, hi, x)


SEEDS = range(8)

# -- the lookup table ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4), ids=[f"seed{s}" for s in range(4)])
def test_lut_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    pool = random_pool(rng, int(rng.integers(2, 40)), int(rng.integers(2, 17)))
    lut = pool_golden.build_lut(pool)
    assert lut.shape == (256, len(pool)) and lut.dtype == np.int64, f"seed {seed}"
    assert lut.tolist() == brute_lut(pool), f"seed {seed}"


def test_pattern_bit_order():
    # Channel 8g + j is bit j: the lowest channel is the LSB.
    a = np.zeros((1, 16), dtype=np.int64)
    a[0, 0] = 1          # group 0, channel 0, plane 0
    a[0, 15] = 2         # group 1, channel 7, plane 1
    a[0, 9] = 3          # group 1, channel 1, planes 0 and 1
    assert pool_golden.patterns(a, 0).tolist() == [[0b1, 0b10]]
    assert pool_golden.patterns(a, 1).tolist() == [[0, 0b10000010]]


@pytest.mark.parametrize("seed", range(6), ids=[f"seed{s}" for s in range(6)])
def test_narrowed_lut_fits_and_rounds_half_up(seed):
    rng = np.random.default_rng(seed)
    pool_bits = int(rng.integers(2, 17))
    exact = pool_golden.build_lut(random_pool(rng, 16, pool_bits))
    for lut_bits in (2, 3, 4, 8, 16):
        k = pool_golden.lut_shift(exact, lut_bits)
        lut = pool_golden.narrow_lut(exact, k)
        lo, hi = -(1 << (lut_bits - 1)), (1 << (lut_bits - 1)) - 1
        where = f"seed {seed}, pool_bits {pool_bits}, lut_bits {lut_bits}, shift {k}"
        assert lo <= lut.min() and lut.max() <= hi, where
        if k > 0:   # the smallest shift that fits
            smaller = pool_golden.narrow_lut(exact, k - 1)
            assert smaller.min() < lo or smaller.max() > hi, where
        if lut_bits >= pool_bits + 3:
            assert k == 0 and (lut == exact).all(), where
        assert not lut[0].any(), where
        # Round to nearest, halves up: floor(e / 2**k + 1/2) in exact rationals.
        expect = [[(2 * int(e) + (1 << k)) // (1 << (k + 1)) for e in row] for row in exact]
        assert lut.tolist() == expect, where


def test_lut_shift_rejects_bad_width():
    with pytest.raises(ModelError, match="lut_bits"):
        pool_golden.lut_shift(np.zeros((256, 2), np.int64), 1)


# -- dot products ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
def test_bit_serial_equals_integer_dot_product(seed):
    rng = np.random.default_rng(seed)
    act_bits = int(rng.integers(1, 17))
    groups, filters = int(rng.integers(1, 5)), int(rng.integers(1, 7))
    pool = random_pool(rng, int(rng.integers(2, 70)), int(rng.integers(2, 17)))
    index = rng.integers(0, len(pool), size=(filters, groups))
    a = rng.integers(0, 1 << act_bits, size=(5, 8 * groups))
    a[0] = (1 << act_bits) - 1
    w = reconstruct(index, pool)
    out = pool_golden.lut_dot(a, index, pool_golden.build_lut(pool), act_bits)
    assert out.tolist() == (a @ w.T).tolist(), f"seed {seed}, act_bits {act_bits}"


@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
def test_precompute_equals_direct(seed):
    rng = np.random.default_rng(seed)
    act_bits = int(rng.integers(1, 17))
    groups, filters = int(rng.integers(1, 5)), int(rng.integers(1, 80))
    pool = random_pool(rng, int(rng.integers(2, 70)), int(rng.integers(2, 17)))
    exact = pool_golden.build_lut(pool)
    lut = pool_golden.narrow_lut(exact, pool_golden.lut_shift(exact, int(rng.integers(2, 17))))
    index = rng.integers(0, len(pool), size=(filters, groups))
    a = rng.integers(0, 1 << act_bits, size=(6, 8 * groups))
    for bits in range(1, act_bits + 1):
        direct = pool_golden.lut_dot(a, index, lut, act_bits, bits, "direct")
        pre = pool_golden.lut_dot(a, index, lut, act_bits, bits, "precompute")
        assert np.array_equal(direct, pre), f"seed {seed}, act_bits {act_bits}, bits {bits}"


@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
def test_precision_equals_truncated_activations(seed):
    rng = np.random.default_rng(seed)
    act_bits = int(rng.integers(1, 17))
    pool = random_pool(rng, 16, int(rng.integers(2, 17)))
    index = rng.integers(0, 16, size=(5, 3))
    a = rng.integers(0, 1 << act_bits, size=(6, 24))
    w = reconstruct(index, pool)
    for bits in range(1, act_bits + 1):
        out = pool_golden.lut_dot(a, index, pool_golden.build_lut(pool), act_bits, bits)
        t = truncate(a, act_bits, bits)
        assert out.tolist() == (t @ w.T).tolist(), f"seed {seed}, act_bits {act_bits}, bits {bits}"


def test_planes_are_the_top_ones():
    assert list(pool_golden.planes(8, 3)) == [5, 6, 7]
    assert list(pool_golden.planes(8)) == list(range(8))
    assert list(pool_golden.planes(4, 1)) == [3]


def test_narrowed_lut_is_what_the_dot_product_reads():
    # With a narrowed LUT the golden model is sum_b 2**b LUT_narrow[pattern_b]: by hand.
    pool = np.array([[7, 7, 7, 7, 7, 7, 7, 7], [-7, 0, 0, 0, 0, 0, 0, 5]])
    exact = pool_golden.build_lut(pool)                  # spans -7 .. 56
    k = pool_golden.lut_shift(exact, 4)                  # -8 .. 7 -> k = 3: 56 -> 7
    lut = pool_golden.narrow_lut(exact, k)
    assert k == 3 and lut[255].tolist() == [7, 0] and lut[1].tolist() == [1, -1]
    a = np.array([[3, 0, 0, 0, 0, 0, 0, 2]])             # planes: 0 -> pattern 1, 1 -> 129
    assert lut[129].tolist() == [(14 + 4) >> 3, (-2 + 4) >> 3]   # [2, 0]
    out = pool_golden.lut_dot(a, np.array([[0], [1]]), lut, act_bits=2)
    assert out.tolist() == [[1 + 2 * 2, -1 + 2 * 0]]


# -- whole models ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
def test_run_equals_plain_integer_model(seed):
    model = pool_case(seed)
    assert any(layer.is_pool for layer in model.layers)
    assert pool_golden.model_lut(model)[1] == 0, "an exact LUT is needed for this check"
    x = random_inputs(np.random.default_rng(seed + 100), model)
    assert golden.run(model, x).tolist() == reference_run(model, x).tolist(), f"seed {seed}"
    for i, layer in enumerate(model.layers):
        if layer.is_pool:
            assert np.array_equal(model.layer_weight(i), reconstruct(layer.index, model.pool))


@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
def test_run_precision_and_modes(seed):
    model = pool_case(seed)
    x = random_inputs(np.random.default_rng(seed + 200), model)
    for bits in range(1, model.act_bits + 1):
        where = f"seed {seed}, act_bits {model.act_bits}, bits {bits}"
        direct = golden.run(model, x, bits=bits)
        assert direct.tolist() == reference_run(model, x, bits).tolist(), where
        assert np.array_equal(direct, golden.run(model, x, bits=bits, mode="precompute")), where
    # Per-layer settings: a full-precision entry is the same as none.
    pooled = [i for i, layer in enumerate(model.layers) if layer.is_pool]
    mixed = {pooled[0]: model.act_bits}
    assert np.array_equal(golden.run(model, x, bits=mixed), golden.run(model, x))
    modes = {i: ("precompute" if n % 2 else "direct") for n, i in enumerate(pooled)}
    assert np.array_equal(golden.run(model, x, mode=modes), golden.run(model, x))


@pytest.mark.parametrize("seed", range(4), ids=[f"seed{s}" for s in range(4)])
def test_run_with_narrowed_lut_modes_agree(seed):
    model = pool_case(seed, lut_bits=4, pool_bits=8)
    x = random_inputs(np.random.default_rng(seed + 300), model)
    assert pool_golden.model_lut(model)[1] > 0, f"seed {seed}: the LUT should be narrowed"
    for bits in (1, model.act_bits):
        assert np.array_equal(golden.run(model, x, bits=bits),
                              golden.run(model, x, bits=bits, mode="precompute")), f"seed {seed}"


def test_accumulator_bound():
    # Worst case of docs/arithmetic.md §12.7: every entry at its largest magnitude.
    act_bits, pool_bits, groups = 8, 8, 9
    top = (1 << (pool_bits - 1)) - 1
    pool = np.full((2, 8), top)
    pool[1] = -top
    lut = pool_golden.build_lut(pool)
    a = np.full((1, 8 * groups), (1 << act_bits) - 1)
    out = pool_golden.lut_dot(a, np.array([[0] * groups, [1] * groups]), lut, act_bits)
    width = min(16, pool_bits + 3)
    bound = 2 ** (act_bits + width - 1 + int(np.ceil(np.log2(groups))))
    assert out.tolist() == [[8 * top * 255 * groups, -8 * top * 255 * groups]]
    assert abs(out).max() < bound
    assert abs(out).max() >= 2 ** 15, "this sum would overflow an int16 accumulator"


def test_worked_example():
    """docs/arithmetic.md §12.10."""
    pool = np.array([[3, -1, 0, 2, -3, 1, 0, -2],
                     [-2, 3, 1, 0, 1, -1, 3, 0]], np.int8)
    d0 = Layer("dense", (1, 2, 4), (2,), index=np.array([[0], [1]], np.uint8),
               bias=np.array([1, -2]), shift=1, relu=True)
    d1 = Layer("dense", (2,), (2,), weight=np.array([[1, -1], [0, 2]], np.int8),
               bias=np.array([0, 0]), shift=0, relu=False)
    m = QuantModel("pool", act_bits=3, input_shape=(1, 2, 4), input_frac=3,
                   layers=[d0, d1], pool=pool, pool_bits=3, lut_bits=16)
    x = np.array([[[[5, 2, 7, 0], [1, 6, 3, 4]]]])
    expect = {3: [[[5, 3]], [[2, 6]]], 2: [[[5, 1]], [[4, 2]]], 1: [[[5, 0]], [[5, 0]]]}
    for bits, outs in expect.items():
        assert [t.tolist() for t in golden.run(m, x, trace=True, bits=bits)[1][1:]] == outs
    a = x.reshape(1, 8)
    assert [int(pool_golden.patterns(a, b)[0, 0]) for b in range(3)] == [85, 102, 165]
    m.lut_bits = 3
    assert pool_golden.model_lut(m)[1] == 2
    assert [t.tolist() for t in golden.run(m, x, trace=True)[1][1:]] == [[[3, 2]], [[1, 4]]]


# -- bad settings -----------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [0, 9, -1, True, 2.0, "4"])
def test_bad_precision_names_layer_and_field(bits):
    model = pool_case(0)
    model.act_bits = 8
    x = np.zeros((1, *model.input_shape), dtype=np.int64)
    with pytest.raises(ModelError) as info:
        golden.run(model, x, bits=bits)
    message = str(info.value)
    assert "layer" in message and "'bits'" in message and "1..8" in message, message


def test_precision_on_a_layer_that_is_not_pooled():
    model = pool_case(1)
    x = np.zeros((1, *model.input_shape), dtype=np.int64)
    plain = [i for i, layer in enumerate(model.layers) if not layer.is_pool][0]
    with pytest.raises(ModelError, match=f"layer {plain}: field 'bits'"):
        golden.run(model, x, bits={plain: 3})


def test_precision_on_a_model_without_pools():
    model = random_model(np.random.default_rng(0), scheme="int8")
    x = np.zeros((1, *model.input_shape), dtype=np.int64)
    with pytest.raises(ModelError, match="no pool layers"):
        golden.run(model, x, bits=4)
    assert golden.run(model, x).shape == (1, 7)     # the default still runs


def test_bad_mode():
    model = pool_case(2)
    x = np.zeros((1, *model.input_shape), dtype=np.int64)
    with pytest.raises(ModelError, match="'mode'.*'fast'"):
        golden.run(model, x, mode="fast")
