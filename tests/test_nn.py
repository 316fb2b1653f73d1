"""The numpy trainer (``shiftpool.sw.train.nn``): analytic gradients against central finite
differences in float64, the loss against its formula, and a tiny training run."""

from __future__ import annotations

import numpy as np
import pytest
from shiftpool.sw.train.nn import (
    Conv3x3,
    Dense,
    FloatModel,
    FloatModelError,
    MaxPool2,
    ReLU,
    load_float_model,
    save_float_model,
    softmax_cross_entropy,
    train,
)

EPS = 1e-6
SEEDS = range(3)


def numeric_grad(f, x: np.ndarray) -> np.ndarray:
    """Central differences of the scalar ``f()`` wrt every element of ``x`` (in place)."""
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + EPS
        plus = f()
        x[idx] = old - EPS
        minus = f()
        x[idx] = old
        g[idx] = (plus - minus) / (2 * EPS)
    return g


def assert_close(analytic, numeric, where):
    assert analytic.shape == numeric.shape, where
    scale = max(1.0, float(np.abs(numeric).max()))
    err = float(np.abs(analytic - numeric).max())
    assert err <= 1e-6 * scale, f"{where}: max error {err:.3g} (scale {scale:.3g})"


# -- layers -----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
def test_conv3x3_gradients(seed):
    rng = np.random.default_rng(seed)
    n, ci, co, h, w = 2, int(rng.integers(1, 3)), int(rng.integers(1, 4)), 3, 4
    layer = Conv3x3(ci, co, rng)
    layer.bias[...] = rng.normal(size=co)
    x = rng.normal(size=(n, ci, h, w))
    g_out = rng.normal(size=(n, co, h, w))

    def loss():
        return float(np.sum(layer.forward(x) * g_out))

    loss()
    dx = layer.backward(g_out)
    assert_close(dx, numeric_grad(loss, x), f"seed {seed} dx")
    assert_close(layer.grads["weight"], numeric_grad(loss, layer.weight), f"seed {seed} dW")
    assert_close(layer.grads["bias"], numeric_grad(loss, layer.bias), f"seed {seed} db")


def test_conv3x3_forward_by_hand():
    """One input channel, one filter: the centre tap alone copies, a corner tap shifts."""
    layer = Conv3x3(1, 2)
    layer.weight[0, 0, 1, 1] = 2.0            # centre: 2 * x
    layer.weight[1, 0, 0, 0] = 1.0            # top-left: x[y-1, x-1]
    layer.bias[...] = [0.5, 0.0]
    x = np.arange(6, dtype=np.float64).reshape(1, 1, 2, 3)
    out = layer.forward(x)
    assert out[0, 0].tolist() == [[0.5, 2.5, 4.5], [6.5, 8.5, 10.5]]
    assert out[0, 1].tolist() == [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]


@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
def test_dense_gradients(seed):
    rng = np.random.default_rng([seed, 1])
    shape = (2, 2, 3)                          # a feature map, flattened by the layer
    layer = Dense(12, int(rng.integers(1, 5)), rng)
    layer.bias[...] = rng.normal(size=layer.out_features)
    x = rng.normal(size=(3, *shape))
    g_out = rng.normal(size=(3, layer.out_features))

    def loss():
        return float(np.sum(layer.forward(x) * g_out))

    loss()
    dx = layer.backward(g_out)
    assert dx.shape == x.shape, f"seed {seed}"
    assert_close(dx, numeric_grad(loss, x), f"seed {seed} dx")
    assert_close(layer.grads["weight"], numeric_grad(loss, layer.weight), f"seed {seed} dW")
    assert_close(layer.grads["bias"], numeric_grad(loss, layer.bias), f"seed {seed} db")


@pytest.mark.parametrize("hw", [(4, 4), (5, 3), (3, 7)], ids=["even", "odd-h", "odd-w"])
@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
def test_maxpool2_gradients(seed, hw):
    rng = np.random.default_rng([seed, 2])
    layer = MaxPool2()
    x = rng.normal(size=(2, 2, *hw))           # no ties: the max is differentiable
    g_out = rng.normal(size=(2, 2, hw[0] // 2, hw[1] // 2))

    def loss():
        return float(np.sum(layer.forward(x) * g_out))

    out = layer.forward(x)
    assert out.shape == g_out.shape, f"seed {seed}"
    dx = layer.backward(g_out)
    assert_close(dx, numeric_grad(loss, x), f"seed {seed} {hw}")
    # The dropped odd row/column receives no gradient.
    assert not dx[:, :, hw[0] // 2 * 2:].any() and not dx[:, :, :, hw[1] // 2 * 2:].any()


def test_maxpool2_tie_sends_gradient_once():
    layer = MaxPool2()
    layer.forward(np.ones((1, 1, 2, 2)))
    dx = layer.backward(np.array([[[[3.0]]]]))
    assert dx.sum() == 3.0 and np.count_nonzero(dx) == 1


@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
def test_relu_gradients(seed):
    rng = np.random.default_rng([seed, 3])
    layer = ReLU()
    x = rng.normal(size=(3, 5))
    x = np.where(np.abs(x) < 0.01, 0.5, x)     # keep away from the kink
    g_out = rng.normal(size=x.shape)

    def loss():
        return float(np.sum(layer.forward(x) * g_out))

    loss()
    assert_close(layer.backward(g_out), numeric_grad(loss, x), f"seed {seed}")


# -- loss ----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
def test_softmax_cross_entropy(seed):
    rng = np.random.default_rng([seed, 4])
    n, k = 4, 5
    logits = rng.normal(size=(n, k)) * 3
    y = rng.integers(0, k, size=n)
    loss, grad = softmax_cross_entropy(logits, y)
    expected = np.mean([np.log(np.sum(np.exp(row))) - row[c]
                        for row, c in zip(logits, y, strict=True)])
    assert loss == pytest.approx(expected, rel=1e-12), f"seed {seed}"
    assert_close(grad, numeric_grad(lambda: softmax_cross_entropy(logits, y)[0], logits),
                 f"seed {seed}")


def test_softmax_cross_entropy_large_logits():
    """Shifted by the row maximum: no overflow (warnings are errors here)."""
    loss, grad = softmax_cross_entropy(np.array([[1000.0, 0.0], [0.0, -1000.0]]),
                                       np.array([1, 0]))
    assert loss == pytest.approx(500.0)
    assert np.allclose(grad, [[0.5, -0.5], [0.0, 0.0]])


# -- a whole model ------------------------------------------------------------------------------

def tiny_model(rng) -> FloatModel:
    return FloatModel([Conv3x3(1, 3, rng), ReLU(), MaxPool2(), Dense(3 * 2 * 2, 2, rng)],
                      input_shape=(1, 4, 5))


@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
def test_model_gradients(seed):
    """Backprop through conv, relu, pool and dense equals finite differences of the
    loss for every parameter, in the order ``params()`` lists them."""
    rng = np.random.default_rng([seed, 5])
    model = tiny_model(rng)
    for p in model.params():
        p += rng.normal(scale=0.1, size=p.shape)
    x = rng.normal(size=(3, 1, 4, 5))
    y = rng.integers(0, 2, size=3)

    def loss():
        return softmax_cross_entropy(model.forward(x), y)[0]

    _, g = softmax_cross_entropy(model.forward(x), y)
    dx = model.backward(g)
    analytic = [a.copy() for a in model.grads()]
    assert len(analytic) == len(model.params()) == 4, f"seed {seed}"
    for i, (p, a) in enumerate(zip(model.params(), analytic, strict=True)):
        assert_close(a, numeric_grad(loss, p), f"seed {seed} param {i}")
    assert_close(dx, numeric_grad(loss, x), f"seed {seed} dx")


def test_weight_transform_is_straight_through():
    """With a transform the forward pass uses the transformed weights; the latent
    weights get the gradient wrt those (straight through)."""
    seed = 7
    rng = np.random.default_rng(seed)
    model = tiny_model(rng)
    x = rng.normal(size=(2, 1, 4, 5))
    y = np.array([0, 1])

    def halve(index, w):
        return 0.5 * w

    reference = model.copy()
    for layer in reference.layers:
        if layer.kind in ("conv3x3", "dense"):
            layer.weight *= 0.5
    out = model.forward(x, halve)
    assert np.allclose(out, reference.forward(x)), f"seed {seed}"
    _, g = softmax_cross_entropy(out, y)
    model.backward(g, halve)
    _, g = softmax_cross_entropy(reference.forward(x), y)
    reference.backward(g)
    for a, b in zip(model.grads(), reference.grads(), strict=True):
        assert np.allclose(a, b), f"seed {seed}"


# -- training -----------------------------------------------------------------------------------

def toy_data(rng, n: int):
    """Two classes: a bright blob in the left or in the right half of a 4x5 image."""
    y = rng.integers(0, 2, size=n)
    x = rng.normal(0.0, 0.3, size=(n, 1, 4, 5))
    x[y == 0, :, :, :2] += 1.0
    x[y == 1, :, :, 3:] += 1.0
    return x, y


def test_training_decreases_loss():
    seed = 3
    rng = np.random.default_rng(seed)
    model = tiny_model(rng)
    x, y = toy_data(rng, 96)
    start = softmax_cross_entropy(model.forward(x), y)[0]
    history = train(model, x, y, epochs=15, batch_size=16, lr=1e-2, seed=seed, progress=False)
    end = softmax_cross_entropy(model.forward(x), y)[0]
    assert len(history) == 15, f"seed {seed}"
    assert history[-1] < 0.5 * history[0], f"seed {seed}: {history}"
    assert end < 0.5 * start, f"seed {seed}: loss {start:.3f} -> {end:.3f}"
    x_test, y_test = toy_data(np.random.default_rng(seed + 100), 64)
    assert model.accuracy(x_test, y_test) >= 0.9, f"seed {seed}"


def test_training_is_reproducible():
    seed = 4
    runs = []
    for _ in range(2):
        rng = np.random.default_rng(seed)
        model = tiny_model(rng)
        x, y = toy_data(rng, 32)
        runs.append((train(model, x, y, epochs=2, batch_size=8, lr=1e-2, seed=seed,
                           progress=False), model.params()))
    assert runs[0][0] == runs[1][0], f"seed {seed}"
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        assert np.array_equal(a, b), f"seed {seed}"


def test_train_rejects_bad_arguments():
    rng = np.random.default_rng(0)
    model = tiny_model(rng)
    x, y = toy_data(rng, 4)
    with pytest.raises(ValueError, match="x: shape"):
        train(model, x[:, :, :3], y, 1, 2, 1e-2, 0, progress=False)
    with pytest.raises(ValueError, match="y: needs 4 integer labels"):
        train(model, x, y.astype(float), 1, 2, 1e-2, 0, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        train(model, x, y, 1, 0, 1e-2, 0, progress=False)
    with pytest.raises(FloatModelError, match="layer 1"):
        FloatModel([Conv3x3(1, 3), Dense(5, 2)], input_shape=(1, 4, 5))


def test_float_model_file_round_trip(tmp_path):
    seed = 9
    rng = np.random.default_rng(seed)
    model = tiny_model(rng)
    model.meta = {"seed": seed}
    save_float_model(model, tmp_path / "f.npz")
    back = load_float_model(tmp_path / "f.npz")
    assert back.meta == model.meta and back.input_shape == model.input_shape
    x = rng.normal(size=(2, 1, 4, 5))
    assert np.array_equal(back.forward(x), model.forward(x)), f"seed {seed}"


@pytest.mark.parametrize("cut", [0.0, 0.3, 0.95, None], ids=["empty", "30%", "95%", "text"])
def test_float_model_file_damaged(tmp_path, cut):
    good = tmp_path / "f.npz"
    save_float_model(tiny_model(np.random.default_rng(10)), good)
    raw = good.read_bytes()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip" if cut is None else raw[:int(len(raw) * cut)])
    with pytest.raises(FloatModelError, match="not a float model file"):
        load_float_model(bad)
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(FloatModelError, match="single array"):
        load_float_model(tmp_path / "one.npy")
