"""The integer golden model (``shiftpool.sw.schemes.golden``) against naive references written
here with plain Python integers and loops, plus hand-computed requantization cases."""

from __future__ import annotations

import numpy as np
import pytest
from shiftpool.sim.kit import seeds
from shiftpool.sw.model.file import Layer, ModelError, QuantModel
from shiftpool.sw.model.randmodel import random_model
from shiftpool.sw.schemes import golden

# -- naive references (plain Python ints; nothing from shiftpool) -------------------------


def naive_conv3x3(a, w) -> list:
    """``a`` [N][C][H][W], ``w`` [F][C][3][3] -> [N][F][H][W], zero padding 1."""
    n, c, h, wd = len(a), len(a[0]), len(a[0][0]), len(a[0][0][0])
    out = [[[[0] * wd for _ in range(h)] for _ in range(len(w))] for _ in range(n)]
    for b in range(n):
        for f in range(len(w)):
            for y in range(h):
                for x in range(wd):
                    acc = 0
                    for ch in range(c):
                        for ky in range(3):
                            for kx in range(3):
                                yy, xx = y + ky - 1, x + kx - 1
                                if 0 <= yy < h and 0 <= xx < wd:
                                    acc += int(w[f][ch][ky][kx]) * int(a[b][ch][yy][xx])
                    out[b][f][y][x] = acc
    return out


def naive_dense(a, w) -> list:
    """``a`` [N][K] (already flat), ``w`` [F][K] -> [N][F]."""
    return [[sum(int(wi) * int(ai) for wi, ai in zip(row, sample, strict=True)) for row in w]
            for sample in a]


def naive_maxpool2(a) -> list:
    n, c, h, wd = len(a), len(a[0]), len(a[0][0]), len(a[0][0][0])
    return [[[[max(a[b][ch][2 * y][2 * x], a[b][ch][2 * y][2 * x + 1],
                   a[b][ch][2 * y + 1][2 * x], a[b][ch][2 * y + 1][2 * x + 1])
               for x in range(wd // 2)] for y in range(h // 2)] for ch in range(c)]
             for b in range(n)]


def naive_requantize(v: int, shift: int, act_bits: int) -> int:
    """Round half up by exact rational arithmetic, then clip."""
    if shift:
        num, den = 2 * v + (1 << shift), 1 << (shift + 1)    # v / 2**s + 1/2
        v = num // den                                      # floor of that
    return min(max(v, 0), (1 << act_bits) - 1)


def term_value(code: int) -> int:
    code = int(code)
    if code == 0:
        return 0
    return (1 if code > 0 else -1) * 2 ** (abs(code) - 1)


def naive_weights(model: QuantModel, layer: Layer):
    """The layer's integer weights as nested lists, decoded here from the stored codes."""
    if model.scheme == "int8":
        return layer.weight.tolist()
    t0, t1 = layer.terms[0].tolist(), layer.terms[1].tolist()

    def add(x, y):
        if isinstance(x, list):
            return [add(p, q) for p, q in zip(x, y, strict=True)]
        return term_value(x) + term_value(y)

    return add(t0, t1)


def flatten(sample) -> list:
    if isinstance(sample, list):
        return [v for item in sample for v in flatten(item)]
    return [sample]


def naive_run(model: QuantModel, x: np.ndarray) -> list:
    a = x.tolist()
    for layer in model.layers:
        if layer.kind == "maxpool2":
            a = naive_maxpool2(a)
            continue
        w = naive_weights(model, layer)
        bias = [int(b) for b in layer.bias]
        if layer.kind == "conv3x3":
            v = naive_conv3x3(a, w)
            v = [[[[val + bias[f] for val in row] for row in chan] for f, chan in enumerate(s)]
                 for s in v]
        else:
            v = naive_dense([flatten(s) for s in a], [flatten(row) for row in w])
            v = [[val + bias[f] for f, val in enumerate(s)] for s in v]
        if layer.relu:
            q = int(layer.shift)

            def rq(item, q=q):
                if isinstance(item, list):
                    return [rq(i) for i in item]
                return naive_requantize(item, q, model.act_bits)

            v = rq(v)
        a = v
    return a


# -- conv3x3, dense, whole models ---------------------------------------------------------

CONV_SEEDS = seeds(6)


@pytest.mark.parametrize("seed", CONV_SEEDS, ids=[f"seed{s}" for s in CONV_SEEDS])
def test_conv3x3_matches_naive(seed):
    rng = np.random.default_rng(seed)
    n, c, h, w, f = (int(v) for v in rng.integers(1, [3, 4, 6, 6, 4], endpoint=True))
    a = rng.integers(0, 256, size=(n, c, h, w))
    wt = rng.integers(-(1 << 16), 1 << 16, size=(f, c, 3, 3))
    got = golden.conv3x3(a, wt)
    assert got.dtype == np.int64, f"seed {seed}"
    assert got.tolist() == naive_conv3x3(a.tolist(), wt.tolist()), f"seed {seed} {a.shape}"


def test_conv3x3_edges_by_hand():
    """A single 1 in a corner: each output sees it through exactly one weight tap."""
    a = np.zeros((1, 1, 3, 4), dtype=np.int64)
    a[0, 0, 0, 0] = 1
    w = np.arange(1, 10).reshape(1, 1, 3, 3)
    out = golden.conv3x3(a, w)[0, 0]
    # out[y, x] = w[ky, kx] with y + ky - 1 = 0, x + kx - 1 = 0.
    assert out.tolist() == [[5, 4, 0, 0], [2, 1, 0, 0], [0, 0, 0, 0]]


def _dense_model(rng, scheme: str, act_bits: int, ci: int, co: int, shape) -> QuantModel:
    layer = Layer("dense", tuple(shape), (co,), bias=rng.integers(-1000, 1001, size=co),
                  relu=False)
    if scheme == "int8":
        layer.weight = rng.integers(-127, 128, size=(co, ci)).astype(np.int8)
    else:
        terms = rng.integers(-8, 9, size=(2, co, ci))
        layer.k = rng.integers(1, 3, size=co).astype(np.uint8)
        terms[1][layer.k == 1] = 0
        layer.terms = terms.astype(np.int8)
    return QuantModel(scheme=scheme, act_bits=act_bits, input_shape=tuple(shape),
                      input_frac=act_bits, layers=[layer], exp_bits=3)


@pytest.mark.parametrize("scheme", ["int8", "flightnn"])
@pytest.mark.parametrize("seed", range(4), ids=[f"seed{s}" for s in range(4)])
def test_dense_matches_naive(scheme, seed):
    rng = np.random.default_rng([seed, len(scheme)])
    shape = tuple(int(v) for v in rng.integers(1, 5, size=3))
    ci, co = int(np.prod(shape)), int(rng.integers(1, 9))
    model = _dense_model(rng, scheme, 8, ci, co, shape)
    model.validate()
    x = rng.integers(0, 256, size=(3, *shape))
    w = naive_weights(model, model.layers[0])
    expected = [[v + int(b) for v, b in zip(row, model.layers[0].bias, strict=True)]
                for row in naive_dense([flatten(s) for s in x.tolist()], w)]
    assert golden.run(model, x).tolist() == expected, f"{scheme} seed {seed}"


MODEL_CASES = [(scheme, seed) for scheme in ("flightnn", "int8") for seed in range(4)]


@pytest.mark.parametrize("scheme, seed", MODEL_CASES,
                         ids=[f"{s}-seed{n}" for s, n in MODEL_CASES])
def test_run_matches_naive(scheme, seed):
    """Whole random models (conv, pool, dense, requantization) against the naive model;
    the trace's hidden activations stay in the unsigned ``act_bits`` range."""
    rng = np.random.default_rng(seed)
    act_bits = int(rng.integers(2, 9))
    model = random_model(rng, scheme=scheme, act_bits=act_bits,
                         exp_bits=int(rng.integers(1, 5)),
                         input_shape=(int(rng.integers(1, 3)), int(rng.integers(2, 6)),
                                      int(rng.integers(2, 6))),
                         convs=(int(rng.integers(1, 4)),) * int(rng.integers(1, 3)),
                         pool=bool(seed % 2 == 0), dense=(int(rng.integers(2, 6)), 3))
    x = rng.integers(0, 1 << act_bits, size=(3, *model.input_shape))
    out, trace = golden.run(model, x, trace=True)
    assert out.tolist() == naive_run(model, x), f"{scheme} seed {seed}"
    assert len(trace) == len(model.layers) + 1, f"seed {seed}"
    for i, (layer, act) in enumerate(zip(model.layers, trace[1:], strict=True)):
        assert act.shape[1:] == tuple(layer.out_shape), f"seed {seed} layer {i}"
        if layer.relu:
            assert act.min() >= 0 and act.max() < 1 << act_bits, f"seed {seed} layer {i}"


def test_run_one_sample_and_empty_batch():
    seed = 21
    model = random_model(np.random.default_rng(seed))
    x = np.random.default_rng(seed).integers(0, 256, size=model.input_shape)
    one = golden.run(model, x)
    assert one.shape == (1, model.classes), f"seed {seed}"
    assert np.array_equal(one, golden.run(model, x[None])), f"seed {seed}"
    empty = golden.run(model, np.zeros((0, *model.input_shape), dtype=np.int64))
    assert empty.shape == (0, model.classes), f"seed {seed}"


def test_worked_example_flightnn():
    """docs/arithmetic.md section 10.1, checked by hand there."""
    t = np.zeros((2, 2, 1, 3, 3), dtype=np.int8)
    t[0, 0, 0] = [[0, 3, 0], [-1, 2, 0], [0, 0, 0]]
    t[1, 0, 0] = [[0, -1, 0], [0, 1, 0], [0, 0, 0]]
    t[0, 1, 0] = [[0, 0, 0], [0, 2, 0], [0, 0, -3]]
    conv = Layer("conv3x3", (1, 2, 2), (2, 2, 2), terms=t, k=np.array([2, 1], np.uint8),
                 bias=np.array([3, -4]), shift=2, relu=True)
    pool = Layer("maxpool2", (2, 2, 2), (2, 1, 1))
    td = np.array([[[1, -2], [3, 0]], [[0, 0], [0, -1]]], dtype=np.int8)
    dense = Layer("dense", (2, 1, 1), (2,), terms=td, k=np.array([1, 2], np.uint8),
                  bias=np.array([0, 5]), shift=0, relu=False)
    m = QuantModel("flightnn", act_bits=4, exp_bits=2, input_shape=(1, 2, 2),
                   input_frac=4, layers=[conv, pool, dense])
    m.validate()
    x = m.quantize_input(np.array([[[[0.30, 0.53125], [0.99, 0.0]]]]))
    y, trace = golden.run(m, x, trace=True)
    assert [a.tolist() for a in trace] == [
        [[[[5, 9], [15, 0]]]],
        [[[[5, 6], [15, 4]], [[2, 4], [7, 0]]]],
        [[[[15]], [[7]]]],
        [[1, 58]],
    ]
    assert y.tolist() == naive_run(m, x) == [[1, 58]]


def test_worked_example_int8():
    """docs/arithmetic.md section 10.2: rounding 180.5 up and saturating 1516 to 255."""
    d0 = Layer("dense", (1, 2, 2), (2,),
               weight=np.array([[10, 20, -3, 1], [-127, 0, 0, 127]], np.int8),
               bias=np.array([9, -8]), shift=4, relu=True)
    d1 = Layer("dense", (2,), (3,), weight=np.array([[1, -1], [-3, 2], [0, 0]], np.int8),
               bias=np.array([0, 100, -7]), shift=0, relu=False)
    m = QuantModel("int8", act_bits=8, input_shape=(1, 2, 2), input_frac=8, layers=[d0, d1])
    m.validate()
    x = m.quantize_input(np.array([[[[0.25, 0.5], [0.75, 1.0]]]]))
    y, trace = golden.run(m, x, trace=True)
    assert x.tolist() == [[[[64, 128], [192, 255]]]]
    assert trace[1].tolist() == [[181, 255]]
    assert y.tolist() == naive_run(m, x) == [[-74, 67, -7]]


# -- requantize -----------------------------------------------------------------------------

@pytest.mark.parametrize("values, shift, act_bits, expected", [
    # shift 0: no rounding term, only clipping
    ([-5, -1, 0, 7, 255, 256, 1000], 0, 8, [0, 0, 0, 7, 255, 255, 255]),
    # shift 1: x.5 rounds up (0.5 -> 1, 1.5 -> 2, 2.5 -> 3); negatives clip to 0
    ([1, 2, 3, 5, -1, -2, -3], 1, 8, [1, 1, 2, 3, 0, 0, 0]),
    # shift 2: 0.25 -> 0, 0.5 -> 1, 1.25 -> 1, 1.5 -> 2, 1.75 -> 2, -0.5 -> 0
    ([1, 2, 5, 6, 7, -2, -6], 2, 8, [0, 1, 1, 2, 2, 0, 0]),
    # saturation at 2**4 - 1 = 15 with shift 3: 14.375, 14.5, 15.375, 15.5, huge
    ([115, 116, 123, 124, 10 ** 12], 3, 4, [14, 15, 15, 15, 15]),
    # 2-bit activations: 2.5 -> 3, 3.5 -> 4 -> 3
    ([5, 7, 4, 3], 1, 2, [3, 3, 2, 2]),
    # large accumulators and shifts: 1024.5 -> 1025, 1024.4999.. -> 1024
    ([2 ** 40 + 2 ** 29, 2 ** 40 + 2 ** 29 - 1], 30, 16, [1025, 1024]),
], ids=["shift0", "shift1", "shift2", "saturate", "act2", "wide"])
def test_requantize_by_hand(values, shift, act_bits, expected):
    got = golden.requantize(np.array(values, dtype=np.int64), shift, act_bits)
    assert got.dtype == np.int64
    assert got.tolist() == expected


@pytest.mark.parametrize("seed", range(3), ids=[f"seed{s}" for s in range(3)])
def test_requantize_matches_exact_rounding(seed):
    rng = np.random.default_rng(seed)
    v = rng.integers(-(1 << 20), 1 << 20, size=300)
    for shift in (0, 1, 2, 5, 13, 21):
        for act_bits in (2, 5, 8, 16):
            got = golden.requantize(v, shift, act_bits).tolist()
            want = [naive_requantize(int(x), shift, act_bits) for x in v]
            assert got == want, f"seed {seed} shift {shift} act_bits {act_bits}"


def test_requantize_accepts_narrow_inputs():
    """int8 accumulators are widened before the rounding term is added."""
    v = np.array([127, -128, 100], dtype=np.int8)
    assert golden.requantize(v, 4, 8).tolist() == [8, 0, 6]


# -- maxpool2 ---------------------------------------------------------------------------------

def test_maxpool2_odd_by_hand():
    """3x5 map: the last row and column are dropped even where they hold the maximum."""
    a = np.array([[[1, 9, 2, 3, 99],
                   [4, 0, 8, 7, 99],
                   [99, 99, 99, 99, 99]]])[None]
    assert golden.maxpool2(a).tolist() == [[[[9, 8]]]]


@pytest.mark.parametrize("seed", range(5), ids=[f"seed{s}" for s in range(5)])
def test_maxpool2_matches_naive(seed):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(2, 8, size=2))
    a = rng.integers(-50, 50, size=(2, 3, h, w))
    got = golden.maxpool2(a)
    assert got.shape == (2, 3, h // 2, w // 2), f"seed {seed}"
    assert got.tolist() == naive_maxpool2(a.tolist()), f"seed {seed} {h}x{w}"


# -- check_inputs ---------------------------------------------------------------------------

@pytest.fixture
def small_model() -> QuantModel:
    return random_model(np.random.default_rng(30), act_bits=6, input_shape=(2, 4, 3))


@pytest.mark.parametrize("shape", [(4, 3), (1, 3, 4, 3), (1, 2, 3, 4), (1, 1, 2, 4, 3), (24,)],
                         ids=["no-channel", "channels", "transposed", "extra-axis", "flat"])
def test_check_inputs_rejects_shape(small_model, shape):
    with pytest.raises(ModelError) as info:
        golden.check_inputs(small_model, np.zeros(shape, dtype=np.int64))
    message = str(info.value)
    assert "shape" in message and "(N, 2, 4, 3)" in message and str(shape) in message, message


@pytest.mark.parametrize("dtype", [np.float64, np.float32, bool])
def test_check_inputs_rejects_non_integer(small_model, dtype):
    x = np.ones((2, 2, 4, 3), dtype=dtype)
    with pytest.raises(ModelError) as info:
        golden.check_inputs(small_model, x)
    message = str(info.value)
    assert "dtype" in message and "not integer" in message and "0, 63" in message, message


@pytest.mark.parametrize("bad", [-1, 64, 1000])
def test_check_inputs_rejects_range(small_model, bad):
    x = np.zeros((3, 2, 4, 3), dtype=np.int64)
    x[1, 1, 2, 0] = bad
    with pytest.raises(ModelError) as info:
        golden.check_inputs(small_model, x)
    message = str(info.value)
    assert "0..63" in message and "act_bits=6" in message and str(bad) in message, message


def test_check_inputs_accepts_edges(small_model):
    x = np.zeros((2, 4, 3), dtype=np.uint8)
    x[0, 0, 0], x[1, 3, 2] = 63, 0
    got = golden.check_inputs(small_model, x)
    assert got.dtype == np.int64 and got.shape == (1, 2, 4, 3)
    assert got[0, 0, 0, 0] == 63
    with pytest.raises(ModelError):
        golden.run(small_model, x.astype(np.float64))
