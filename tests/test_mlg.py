"""MLG (``shiftpool.sw.schemes.mlg``): the odd power-of-two quantizer, the level rules,
the projection, the gradients, distillation, and the stored model."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
from shiftpool.sw.model.file import ModelError, load_model, save_model
from shiftpool.sw.schemes import golden, mlg
from shiftpool.sw.schemes.mlg import MLGTransform, layer_levels, odd_quantize
from shiftpool.sw.train.nn import Conv3x3, Dense, FloatModel, ReLU, distillation_loss


def test_odd_quantize_by_hand():
    # tanh(x) = [0.6, -0.25, 0.0625, -0.716]: max |t| 0.716 -> step 2**-2 at q = 2; no
    # value near a tie between two odd levels (0.5 would scale to 2 within an ulp, and
    # numpy's tanh can land either side of it)
    x = np.arctanh(np.array([0.6, -0.25, 0.0625, -0.716]))
    m, e = odd_quantize(x, 2)
    assert e == 2                          # (2**2 - 1) / 0.716 = 4.19 -> 2**2
    assert m.tolist() == [3, -1, 1, -3]    # nearest odd levels of [2.4, -1, 0.25, -2.86]
    m, e = odd_quantize(np.linspace(-3, 3, 101), 4)
    assert np.all(m % 2 == 1) and m.min() >= -15 and m.max() <= 15


def test_level_rules():
    assert layer_levels("conv3x3", co=16, ci=8, bi=2, bc=44) == (2, 0)   # Bc >= min(16, 72)
    assert layer_levels("conv3x3", co=64, ci=8, bi=2, bc=44) == (2, 44)
    assert layer_levels("conv3x3", co=8, ci=1, bi=2, bc=44) == (0, 0)    # Bi >= min(1, 9)
    assert layer_levels("dense", co=10, ci=64, bi=2, bc=44) == (0, 9)    # 0.9 * min(10, 64)
    assert layer_levels("dense", co=100, ci=784, bi=2, bc=44) == (0, 44)


def _transform(rng, bc=3, bi=2, **opts):
    model = FloatModel([Conv3x3(4, 6, rng), ReLU(), Dense(6 * 25, 5, rng)], (4, 5, 5))
    options = dict(bi=bi, bc=bc, qb=3, qu=6, qv=3, **opts)
    return model, MLGTransform(model, options)


def test_projection_is_the_best_low_rank_fit():
    """Level 2 alone is a truncated SVD: its error is the discarded singular values."""
    rng = np.random.default_rng(0)
    model, t = _transform(rng, bc=3, bi=0)
    w = model.layers[0].weight.reshape(6, -1)
    approx = t.parts[0]["V"] @ t.parts[0]["W1"].reshape(3, -1)
    s = np.linalg.svd(w, compute_uv=False)
    assert np.isclose(np.linalg.norm(w - approx) ** 2, np.sum(s[3:] ** 2))


def test_gradients_match_finite_differences(monkeypatch):
    """The backward of the generated weight wrt each stored tensor (straight through
    the quantizers), without the penalty: d sum(G * W) / d part, numerically."""
    monkeypatch.setattr(mlg, "ORTHO_LAMBDA", 0.0)
    rng = np.random.default_rng(1)
    model, t = _transform(rng)
    g = rng.normal(size=model.layers[0].weight.shape)
    t(0, model.layers[0].weight)
    t.backward(0, g)
    fl = t._float_parts(0)

    def value(parts):
        w1 = np.einsum("cib,cbk->cik", parts["U"], parts["B"]).reshape(3, -1)
        return float(np.sum(g * (parts["V"] @ w1).reshape(g.shape)))

    for name in ("V", "U", "B"):
        idx = tuple(rng.integers(0, n) for n in fl[name].shape)
        bumped = {k: v.copy() for k, v in fl.items()}
        bumped[name][idx] += 1e-6
        numeric = (value(bumped) - value(fl)) / 1e-6
        assert np.isclose(t._grads[0][name][idx], numeric, rtol=1e-4, atol=1e-6), name


def test_distillation_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    s, t = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    loss, grad = distillation_loss(s, t, 3.0)
    assert loss > 0 and distillation_loss(t, t, 3.0)[0] == pytest.approx(0.0, abs=1e-12)
    i, j = 2, 3
    bumped = s.copy()
    bumped[i, j] += 1e-6
    assert np.isclose(grad[i, j], (distillation_loss(bumped, t, 3.0)[0] - loss) / 1e-6,
                      rtol=1e-4)


@pytest.fixture(scope="module")
def mlg_model(digits_float, digits_data):
    from shiftpool.sw.schemes.compress import compress

    x_train, y_train, x_test, y_test = digits_data
    return compress(digits_float, "mlg", x_train=x_train, y_train=y_train, x_test=x_test,
                    y_test=y_test, epochs=3, bc=8, progress=False)


def test_mlg_model_generates_exact_weights_and_round_trips(mlg_model, digits_data, tmp_path):
    layers = {i: layer for i, layer in enumerate(mlg_model.layers) if layer.is_mac}
    conv2 = layers[2]
    assert conv2.mlg_b.shape[1:] == (2, 9) and conv2.mlg_v.shape == (16, 8)
    w1 = np.zeros(conv2.mlg_u.shape[:2] + (9,), dtype=np.int64)
    for c in range(len(w1)):        # level 1, one basis at a time
        w1[c] = conv2.mlg_u[c].astype(np.int64) @ conv2.mlg_b[c].astype(np.int64)
    expect = (conv2.mlg_v.astype(np.int64) @ w1.reshape(8, -1)).reshape(16, 8, 3, 3)
    assert np.array_equal(conv2.int_weight, expect)
    save_model(mlg_model, tmp_path / "m.npz")
    back = load_model(tmp_path / "m.npz")
    x = mlg_model.quantize_input(digits_data[2])
    assert np.array_equal(golden.run(back, x), golden.run(mlg_model, x))
    meta = mlg_model.meta
    print(f"\nmlg digits: accuracy {meta['accuracy']:.4f} (float {meta['float_accuracy']:.4f}),"
          f" {meta['stored_weight_bits']} stored weight bits vs int8 {meta['int8_weight_bits']}")
    assert meta["stored_weight_bits"] < meta["int8_weight_bits"] / 2
    assert meta["accuracy"] > 0.8


@pytest.mark.parametrize("change, words", [
    (lambda m: setattr(m.layers[2], "mlg_b", m.layers[2].mlg_b + 1), "values must be odd"),
    (lambda m: setattr(m, "qv", 9), "model: field 'qv': 9 must be an integer in 2..8"),
    (lambda m: setattr(m.layers[2], "mlg_v", m.layers[2].mlg_v[:, :5]), "field 'mlg_v'"),
    (lambda m: setattr(m.layers[2], "weight", np.zeros((16, 8, 3, 3), np.int8)),
     "an mlg layer stores only its bases"),
])
def test_malformed_mlg_layers_name_the_field(mlg_model, change, words):
    model = copy.deepcopy(mlg_model)
    change(model)
    with pytest.raises(ModelError, match=words):
        model.validate()


def test_generator_expands_the_digits_model(mlg_model):
    """Every MAC layer of the trained digits mlg model, laid out in one set of stores,
    comes out of the weight generator (Amaranth's simulator, idle requests and
    back-pressure) as the golden model's weights, row by row."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from shiftpool.hw.config import AcceleratorConfig
    from shiftpool.hw.generator_layout import STORES
    from shiftpool.hw.program import pack
    from shiftpool.sim.units import load_fields
    from shiftpool.sw.compile.mlg_layout import layer_requests, pack_requests, place_layer
    from test_insitu import expected_rows, simulate

    cfg = AcceleratorConfig(engine="insitu", lanes=2, taps=8, mlg_qb=mlg_model.qb,
                            mlg_qu=mlg_model.qu, mlg_qv=mlg_model.qv, mlg_bi=2, mlg_bc=8,
                            mlg_v_depth=512, mlg_u_depth=512, mlg_w1_depth=512)
    stores = {name: [] for name in STORES}
    requests, rows, levels = [], [], []
    for i, layer in enumerate(mlg_model.layers):
        if layer.is_mac:
            placed = place_layer(cfg, mlg_model, i, stores)
            levels.append((placed.level1, placed.level2))
            requests += layer_requests(cfg, placed)
            rows += expected_rows(cfg, layer, placed.grouped)
    assert (True, True) in levels and (False, True) in levels      # both kinds occur
    load = [pack(load_fields(cfg), dict(store=code, addr=addr, data=row))
            for code, name in enumerate(STORES) for addr, row in enumerate(stores[name])]
    got = simulate(cfg, load, pack_requests(cfg, requests), len(rows), 11, 0.2, 0.3)
    assert got == rows


def test_generator_cycles_of_the_digits_model(mlg_model):
    """The cycle model's generate phase: per row ``count + 3`` (``count`` = Bc with
    level 2, else the group's valid lanes), rows = groups x steps, from the layer
    shapes; the same as the sum over the compiler's requests."""
    from shiftpool.hw.generator_layout import STORES
    from shiftpool.sw.compile.cycles import generate_cycles
    from shiftpool.sw.compile.fit import fit_config
    from shiftpool.sw.compile.image import compile_model, map_layout
    from shiftpool.sw.compile.mlg_layout import generator_cycles, layer_requests, place_layer

    cfg = fit_config(mlg_model, lanes=3, taps=8)
    image = compile_model(mlg_model, cfg)
    stores = {name: [] for name in STORES}
    for i, layer in enumerate(mlg_model.layers):
        if not layer.is_mac:
            continue
        plan = image.plans[i]
        co = layer.out_shape[0]
        counts = ([layer.mlg_v.shape[1]] * -(-co // 3) if layer.mlg_v is not None
                  else [min(3, co - g) for g in range(0, co, 3)])
        expect = plan.steps * sum(c + 3 for c in counts)
        assert generate_cycles(cfg, layer, plan) == expect, f"layer {i}"
        placed = place_layer(cfg, mlg_model, i, stores,
                             grouped=map_layout(mlg_model, i, image.im2col) == "grouped")
        requests = layer_requests(cfg, placed)
        assert len(requests) == len(counts) * plan.steps
        assert generator_cycles(requests) == expect, f"layer {i}"


def test_compress_prints_the_levels_and_the_bits(tmp_path, capsys):
    """``compress --scheme mlg``: a line per MAC layer with its levels (by the level
    rules), the stored tensors' shapes and widths and the generated width, the total
    against int8's, and the bits streamed to the default in-situ engine."""
    from shiftpool.sw.train.nn import MaxPool2, save_float_model

    from shiftpool.cli import main

    rng = np.random.default_rng(5)
    save_float_model(FloatModel([Conv3x3(1, 4, rng), ReLU(), MaxPool2(), Conv3x3(4, 8, rng),
                                 ReLU(), Dense(8 * 16, 10, rng)], (1, 8, 8)),
                     tmp_path / "cnn.npz")
    code = main(["compress", "--scheme", "mlg", "--float-model", str(tmp_path / "cnn.npz"),
                 "--bc", "6", "--epochs", "1", "-o", str(tmp_path / "m.npz")])
    out = capsys.readouterr().out
    assert code == 0, out
    # conv1: Ci = 1 (no level 1), Bc 6 >= min(4, 9) (no level 2); conv2: Bi 2 < min(4, 9),
    # Bc 6 < min(8, 36); dense: Bc 6 < min(10, 128): W1 (6, 128, 1) and V (10, 6)
    assert re.search(r"^  0 +off +off +W1 4x1x9 x6 +7 +216 +288$", out, re.M), out
    # (model layers: conv 0, max-pool 1, conv 2, dense 3; W bits qu + 1 + qb + ceil(log2
    # Bi) with level 1, + qv + ceil(log2 Bc) with level 2)
    assert re.search(r"^  2 +Bi=2 +Bc=6 +V 8x6 x3, U 6x4x2 x6, B 6x2x9 x3 +17 +756 +2304$",
                     out, re.M), out
    assert re.search(r"^  3 +off +Bc=6 +V 10x6 x3, W1 6x128x1 x6 +13 +4788 +10240$", out,
                     re.M), out
    stored = 216 + (48 * 6 + 108 * 3 + 48 * 3) + (60 * 3 + 768 * 6)
    int8 = 8 * (36 + 288 + 1280)
    assert f"weight bits: {stored} stored" in out and f"against int8's {int8}" in out
    assert "streamed to a 2x4 in-situ engine:" in out


@pytest.mark.parametrize("flags, words", [
    (["--qb", "9"], "qb (--qb) must be an integer in 2..8, not 9"),
    (["--bi", "-1"], "bi (--bi) must be an integer (0 or more), not -1"),
])
def test_compress_refuses_bad_mlg_options_in_one_line(tmp_path, capsys, flags, words):
    from shiftpool.cli import main

    code = main(["compress", "--scheme", "mlg", "--epochs", "1", "-o",
                 str(tmp_path / "m.npz"), *flags])
    err = capsys.readouterr().err
    assert code != 0 and words in err and "Traceback" not in err, err
    assert not (tmp_path / "m.npz").exists()
