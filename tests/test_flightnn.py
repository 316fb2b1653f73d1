"""FLightNN quantizers (``shiftpool.sw.schemes.flightnn``): powers of two in the exponent
window, LightNN-1/2 errors, per-filter k by threshold, term codes."""

from __future__ import annotations

import numpy as np
import pytest
from shiftpool.sim.kit import seeds
from shiftpool.sw.schemes.flightnn import (
    FLightNNTransform,
    LightNNTransform,
    exponent_window,
    flightnn_quantize,
    layer_emax,
    lightnn,
    pow2_round,
    residual_norms,
    term_codes,
    thresholds_for_share,
)
from shiftpool.sw.train.nn import Conv3x3, Dense, FloatModel, MaxPool2, ReLU

SEEDS = seeds(6)
SQRT2 = np.sqrt(2.0)


def random_weights(rng: np.random.Generator, shape=None, decades: float = 4.0) -> np.ndarray:
    """Conv- or dense-shaped weights spread over ``decades`` decades, with exact zeros."""
    if shape is None:
        shape = ((int(rng.integers(2, 9)), int(rng.integers(1, 4)), 3, 3) if rng.random() < 0.5
                 else (int(rng.integers(2, 9)), int(rng.integers(3, 20))))
    w = rng.normal(0.0, 1.0, shape) * 10.0 ** rng.uniform(-decades / 2, decades / 2, shape)
    return np.where(rng.random(shape) < 0.1, 0.0, w)


def decode_codes(codes: np.ndarray) -> np.ndarray:
    """Term codes -> values, written out here: 0 or sign * 2**(|c| - 1); float64, as
    the integers overflow int64 for wide windows (exact: powers of two)."""
    c = codes.astype(np.int64)
    return np.sign(c) * np.where(c == 0, 0.0, np.exp2(np.maximum(np.abs(c) - 1, 0)))


# -- pow2_round --------------------------------------------------------------------------

@pytest.mark.parametrize("exp_bits", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
def test_pow2_round_is_a_windowed_power_of_two(seed, exp_bits):
    rng = np.random.default_rng([seed, exp_bits])
    x = random_weights(rng, (400,))
    emax = int(rng.integers(-6, 4))
    emin = emax - (2 ** exp_bits - 1)
    q = pow2_round(x, emax, exp_bits)
    where = f"seed {seed} exp_bits {exp_bits} emax {emax}"
    nz = q != 0
    e = np.log2(np.abs(q[nz]))
    assert np.array_equal(e, np.round(e)), f"{where}: not a power of two"
    assert e.min(initial=emin) >= emin and e.max(initial=emax) <= emax, where
    assert np.all(np.sign(q[nz]) == np.sign(x[nz])), f"{where}: sign changed"
    assert np.all(q[x == 0] == 0), f"{where}: zero not kept"
    # Rounding in the log domain: |x| lies within a factor sqrt(2) of |q|, unless it
    # was clipped at the top of the window.
    ax, aq = np.abs(x[nz]), np.abs(q[nz])
    inside = aq < 2.0 ** emax
    assert np.all(ax[inside] >= aq[inside] / SQRT2), where
    assert np.all(ax[inside] < aq[inside] * SQRT2), where
    assert np.all(ax[~inside] >= 2.0 ** emax / SQRT2), where
    # Flushing: exactly the values below the bottom cut become 0.
    flushed = (x != 0) & (q == 0)
    assert np.array_equal(flushed, (x != 0) & (np.abs(x) < 2.0 ** emin / SQRT2)), where


def test_pow2_round_by_hand():
    # exp_bits=1, emax=2: the window is {2, 4}; cuts at 2**1.5 = 2.83 and 2**0.5 = 1.41.
    x = np.array([3.0, 2.9, 2.8, -1.5, 1.4, -0.7, 100.0, 0.0, -4.0])
    assert pow2_round(x, 2, 1).tolist() == [4.0, 4.0, 2.0, -2.0, 0.0, 0.0, 4.0, 0.0, -4.0]
    # exp_bits=2, emax=0: {1/8, 1/4, 1/2, 1}
    x = np.array([0.3, -0.2, 0.09, 0.08, 0.7, 0.75])
    assert pow2_round(x, 0, 2).tolist() == [0.25, -0.25, 0.125, 0.0, 0.5, 1.0]


def test_pow2_round_tie_rounds_up():
    """A value at the geometric mean of two powers of two rounds to the larger one."""
    x = 4.0 * np.sqrt(2.0)                      # 2**2.5
    if np.log2(x) != 2.5:
        pytest.skip("this libm's log2(4*sqrt(2)) is not exactly 2.5: no tie to test")
    assert pow2_round(np.array([x, -x]), 5, 3).tolist() == [8.0, -8.0]
    assert layer_emax(np.array([x])) == 3


def test_layer_emax_and_window():
    assert layer_emax(np.array([0.1, -5.0, 2.0])) == 2      # R(5) = 4
    assert layer_emax(np.array([0.1, -6.0])) == 3           # log2 6 = 2.58 -> 3
    assert layer_emax(np.zeros(3)) == 0
    assert exponent_window(2, 3) == (-5, 2)
    for bad in (0, 9):
        with pytest.raises(ValueError, match="exp_bits"):
            exponent_window(0, bad)


# -- LightNN-k -------------------------------------------------------------------------

@pytest.mark.parametrize("exp_bits", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
def test_lightnn2_error_not_above_lightnn1(seed, exp_bits):
    rng = np.random.default_rng([seed, exp_bits, 1])
    # One decade: with wide spreads and a 2-exponent window every residual may flush.
    w = random_weights(rng, decades=1.0)
    q1, q2 = lightnn(w, 1, exp_bits), lightnn(w, 2, exp_bits)
    e1, e2 = np.abs(w - q1), np.abs(w - q2)
    where = f"seed {seed} exp_bits {exp_bits}"
    assert np.all(e2 <= e1 + 1e-12 * np.abs(w)), f"{where}: an element got worse"
    if exp_bits > 1:
        # With only two exponents every residual may fall below the window.
        assert np.linalg.norm(e2) < np.linalg.norm(e1), f"{where}: no improvement"
    # Q2 - Q1 is itself a windowed power of two (or 0): the second term.
    emax = layer_emax(w)
    assert np.array_equal(q2 - q1, pow2_round(w - q1, emax, exp_bits)), where
    assert np.array_equal(q1, pow2_round(w, emax, exp_bits)), where


def test_lightnn_rejects_k():
    with pytest.raises(ValueError, match="k must be 1 or 2"):
        lightnn(np.ones(3), 3, 2)


# -- per-filter k -------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
def test_k1_filters_have_no_second_term(seed):
    rng = np.random.default_rng([seed, 2])
    exp_bits = int(rng.integers(1, 5))
    w = random_weights(rng)
    t = rng.uniform(0.0, 1.5, size=len(w)) * np.median(residual_norms(w, exp_bits))
    wq, k = flightnn_quantize(w, t, exp_bits)
    where = f"seed {seed}"
    assert k.dtype == np.uint8 and set(np.unique(k)) <= {1, 2}, where
    q1, q2 = lightnn(w, 1, exp_bits), lightnn(w, 2, exp_bits)
    for i in range(len(w)):
        assert np.array_equal(wq[i], q1[i] if k[i] == 1 else q2[i]), f"{where} filter {i}"
    # k = 2 exactly where the residual norm exceeds the threshold.
    assert np.array_equal(k == 2, residual_norms(w, exp_bits) > t), where
    codes, _ = term_codes(w, k, exp_bits)
    assert not np.any(codes[1][k == 1]), f"{where}: k=1 filter with a second term"


@pytest.mark.parametrize("share", [0.0, 0.2, 1 / 3, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("seed", range(4), ids=[f"seed{s}" for s in range(4)])
def test_thresholds_for_share(seed, share):
    rng = np.random.default_rng([seed, 3])
    n = int(rng.integers(3, 40))
    w = random_weights(rng, (n, 2, 3, 3))
    exp_bits = 2
    r = residual_norms(w, exp_bits)
    t = thresholds_for_share(r, share)
    want = int(round(share * n))
    assert int(np.sum(r <= t)) == want, f"seed {seed} share {share} n {n}"
    _, k = flightnn_quantize(w, t, exp_bits)
    assert int(np.sum(k == 1)) == want, f"seed {seed} share {share} n {n}"


def test_thresholds_for_share_by_hand():
    r = np.array([0.4, 0.1, 0.3, 0.2])
    assert thresholds_for_share(r, 0.5) == pytest.approx(0.25)
    assert thresholds_for_share(r, 0.25) == pytest.approx(0.15)
    assert thresholds_for_share(r, 1.0) == 0.4
    assert thresholds_for_share(r, 0.0) < 0.0
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="k1_share"):
            thresholds_for_share(r, bad)


# -- term codes ---------------------------------------------------------------------------

@pytest.mark.parametrize("exp_bits", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
def test_term_codes_reconstruct_weights(seed, exp_bits):
    rng = np.random.default_rng([seed, exp_bits, 4])
    w = random_weights(rng)
    k = rng.integers(1, 3, size=len(w)).astype(np.uint8)
    t = np.where(k == 2, -1.0, np.inf)        # forces exactly this k per filter
    wq, k_back = flightnn_quantize(w, t, exp_bits)
    assert np.array_equal(k_back, k), f"seed {seed}"
    codes, emin = term_codes(w, k, exp_bits)
    where = f"seed {seed} exp_bits {exp_bits}"
    assert codes.dtype == np.int8 and codes.shape == (2, *w.shape), where
    assert np.abs(codes.astype(np.int64)).max() <= 2 ** exp_bits, where
    assert emin == layer_emax(w) - (2 ** exp_bits - 1), where
    ints = decode_codes(codes).sum(axis=0)
    assert np.array_equal(ints * 2.0 ** emin, wq), f"{where}: codes do not give the weights"


def test_term_codes_by_hand():
    # emax = 1 (R(1.7) = 2), exp_bits = 1 -> window {1, 2}, emin = 0.
    w = np.array([[1.7, -1.0, 0.2], [1.2, 0.0, -1.9]])
    codes, emin = term_codes(w, np.array([2, 1]), 1)
    assert emin == 0
    # filter 0: 1.7 -> 2 (code 2), residual -0.3 flushes; -1 -> -1 (code -1); 0.2 -> 0
    # filter 1 (k = 1): 1.2 -> 1, 0 -> 0, -1.9 -> -2; no second term
    assert codes.tolist() == [[[2, -1, 0], [1, 0, -2]], [[0, 0, 0], [0, 0, 0]]]
    codes, _ = term_codes(np.array([[3.0, 1.0]]), np.array([2]), 2)
    # emax = 2 (R(3) = 4), emin = -1: 3 = 4 - 1 -> codes 4 and -2
    assert codes.tolist() == [[[4, 2]], [[-2, 0]]]


def test_term_codes_reject_codes_beyond_int8():
    with pytest.raises(ValueError, match="exp_bits"):
        term_codes(np.array([[1.0, 1e-3]]), np.array([2]), 7)


# -- training transforms ------------------------------------------------------------------

def _tiny_model(seed: int) -> FloatModel:
    rng = np.random.default_rng(seed)
    return FloatModel([Conv3x3(1, 6, rng), ReLU(), MaxPool2(), Dense(6 * 2 * 2, 3, rng)],
                      input_shape=(1, 4, 4))


def test_lightnn_transform_forward_weights():
    seed = 40
    model = _tiny_model(seed)
    transform = LightNNTransform(2, 3)
    for i in (0, 3):
        w = model.layers[i].weight
        assert np.array_equal(transform(i, w), lightnn(w, 2, 3)), f"seed {seed} layer {i}"
    with pytest.raises(ValueError, match="k must be 1 or 2"):
        LightNNTransform(0, 3)


def test_flightnn_transform_forward_and_threshold_gradient():
    """Forward equals flightnn_quantize at the current thresholds; the penalty alone
    drives every threshold up (toward k = 1), more strongly for larger lam."""
    seed = 41
    model = _tiny_model(seed)
    grads = {}
    for lam in (1e-3, 1e-2):
        transform = FLightNNTransform(model, exp_bits=2, k1_target=0.5, lam=lam)
        for i in (0, 3):
            w = model.layers[i].weight
            wq, k = flightnn_quantize(w, transform.thresholds(i), 2)
            assert np.array_equal(transform(i, w), wq), f"seed {seed} layer {i}"
            assert np.mean(k == 1) == pytest.approx(0.5, abs=0.5 / len(k) + 1e-9), (
                f"seed {seed} layer {i}")
        assert transform.penalty() > 0, f"seed {seed}"
        grads[lam] = np.concatenate(transform.grads())
        assert np.all(grads[lam] <= 0) and np.any(grads[lam] < 0), f"seed {seed} lam {lam}"
    assert np.allclose(grads[1e-2], 10 * grads[1e-3]), f"seed {seed}"
    with pytest.raises(ValueError, match="lam"):
        FLightNNTransform(model, 2, 0.5, lam=-1.0)


def test_fine_tuning_keeps_each_layers_window():
    """The window is the float model's: a weight that grows past a rounding cut clips
    to ``2**emax`` rather than moving the whole layer's window up (which would flush
    the layer's small weights to 0 and send its filters to k = 2)."""
    seed = 42
    model = _tiny_model(seed)
    flight = FLightNNTransform(model, exp_bits=2, k1_target=0.5, lam=1e-2)
    light = LightNNTransform(2, 2, model)
    for i in (0, 3):
        w = model.layers[i].weight
        emax = layer_emax(w)
        assert flight.emax[i] == light.emax[i] == emax, f"seed {seed} layer {i}"
        grown = w * 4.0                      # its own window would be two exponents up
        assert layer_emax(grown) == emax + 2
        wq, _ = flightnn_quantize(grown, flight.thresholds(i), 2, emax)
        assert np.array_equal(flight(i, grown), wq), f"seed {seed} layer {i}"
        assert np.abs(flight(i, grown)).max() <= 2.0 ** (emax + 1), f"seed {seed} layer {i}"
        assert np.array_equal(light(i, grown), lightnn(grown, 2, 2, emax))
        # Nothing flushes that did not flush in the float model's window.
        assert np.count_nonzero(light(i, grown)) >= np.count_nonzero(light(i, w))
