"""Weight-pool compression (``shiftpool.sw.schemes.pool``, ``compress(scheme="pool")``), pool
model files, storage accounting, and the accuracy of the digits model with a pool."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shiftpool.sw.model.file import Layer, ModelError, QuantModel, load_model, save_model
from shiftpool.sw.model.randmodel import random_model
from shiftpool.sw.schemes import golden, pool
from shiftpool.sw.schemes.compress import compress, evaluate
from shiftpool.sw.train.nn import Conv3x3, Dense, FloatModel, MaxPool2, ReLU

from shiftpool.cli import main

# -- vectors, pool, assignment ----------------------------------------------------------


def test_vectors_follow_the_input_channel_axis():
    w = np.arange(2 * 16 * 9).reshape(2, 16, 3, 3)
    v = pool.to_vectors(w)
    assert v.shape == (2 * 2 * 9, 8)
    # Row order (f, g, ky, kx): row ((f*G + g)*3 + ky)*3 + kx.
    for f, g, ky, kx in [(0, 0, 0, 0), (1, 1, 2, 1), (0, 1, 1, 2)]:
        row = ((f * 2 + g) * 3 + ky) * 3 + kx
        assert v[row].tolist() == w[f, 8 * g:8 * g + 8, ky, kx].tolist()
    d = np.arange(3 * 24).reshape(3, 24)
    assert pool.to_vectors(d)[4].tolist() == d[1, 8:16].tolist()
    assert pool.index_shape(w.shape) == (2, 2, 3, 3) and pool.index_shape(d.shape) == (3, 3)
    with pytest.raises(ValueError, match="multiple of 8"):
        pool.to_vectors(np.zeros((2, 12, 3, 3)))


def test_poolable_layers():
    assert pool.poolable("conv3x3", (8, 4, 4)) and pool.poolable("dense", (16, 2, 2))
    assert not pool.poolable("conv3x3", (1, 8, 8)) and not pool.poolable("dense", (12,))
    assert not pool.poolable("maxpool2", (8, 4, 4))


@pytest.mark.parametrize("seed", range(4), ids=[f"seed{s}" for s in range(4)])
def test_cosine_assign_is_argmax_cosine(seed):
    rng = np.random.default_rng(seed)
    pool_ = rng.integers(-127, 128, size=(int(rng.integers(2, 40)), 8))
    vectors = rng.normal(size=(50, 8)) * rng.uniform(0.01, 10, size=(50, 1))
    got = pool.cosine_assign(vectors, pool_)
    for v, p in zip(vectors, got, strict=True):
        cos = [float(v @ q) / (np.linalg.norm(v) * np.linalg.norm(q)) for q in pool_]
        assert p == int(np.argmax(cos)), f"seed {seed}"


def test_cosine_assign_ties_and_zeros():
    pool_ = np.array([[0] * 8, [2, 0, 0, 0, 0, 0, 0, 0], [4, 0, 0, 0, 0, 0, 0, 0],
                      [0, 1, 0, 0, 0, 0, 0, 0]])
    vectors = np.array([[1.0, 0, 0, 0, 0, 0, 0, 0], [0.0] * 8, [-1.0, 0, 0, 0, 0, 0, 0, 0]])
    # Same direction twice: the lower index. Zero vector: index 0. Opposite of every
    # non-zero pool vector but one orthogonal: cosine 0 ties with the zero vector -> 0.
    assert pool.cosine_assign(vectors, pool_).tolist() == [1, 0, 0]


def test_fit_scale_is_the_nearest_power_of_two():
    q = np.array([[3, -1, 2, 0]])
    assert pool.fit_scale(q * 2.0 ** -5, q) == 5
    assert pool.fit_scale(q * 2.0 ** 3, q) == -3
    assert pool.fit_scale(q * 1.4 * 2.0 ** -5, q) == 5      # log2 1.4 < 0.5
    assert pool.fit_scale(q * 1.5 * 2.0 ** -5, q) == 4      # log2 1.5 > 0.5
    assert pool.fit_scale(-q * 2.0 ** -2, q) == 2           # alpha < 0: the norm ratio
    assert pool.fit_scale(np.zeros(4), q) == 0


def test_quantize_pool_max_abs():
    p = pool.quantize_pool(np.array([[0.5, -1.0, 0.25, 0, 0, 0, 0, 0.126]]), 8)
    assert p.tolist() == [[64, -127, 32, 0, 0, 0, 0, 16]]     # 63.5 -> 64, 16.002 -> 16
    assert not pool.quantize_pool(np.zeros((2, 8)), 4).any()
    with pytest.raises(ValueError, match="pool_bits"):
        pool.quantize_pool(np.ones((2, 8)), 1)


@pytest.mark.parametrize("size, bits", [(16, 8), (64, 4), (128, 12)])
def test_build_pool_shape_dtype_range(digits_float, size, bits):
    layers = [digits_float.layers[i].weight for i in pool.pool_layer_indices(digits_float)]
    p = pool.build_pool(layers, size, bits, seed=3)
    top = (1 << (bits - 1)) - 1
    assert p.shape == (size, 8) and p.dtype == np.int64
    assert np.abs(p).max() == top
    assert len(np.unique(p, axis=0)) > size // 2, "k-means should use most of the pool"
    assert np.array_equal(p, pool.build_pool(layers, size, bits, seed=3)), "not deterministic"


def test_build_pool_with_fewer_vectors_than_entries():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 8, 3, 3))                     # 18 vectors
    p = pool.build_pool([w], 32, 8)
    assert p.shape == (32, 8) and not p[18:].any() and np.abs(p[:18]).sum(axis=1).all()
    with pytest.raises(ValueError, match="no non-zero"):
        pool.build_pool([np.zeros((2, 8))], 16, 8)


def test_pool_layers_of_the_digits_model(digits_float):
    # conv 1 -> 8 (1 input channel) stays int8; conv 8 -> 16 and dense 64 -> 10 are pooled.
    assert pool.pool_layer_indices(digits_float) == [3, 6]


def test_transform_trains_the_pool_with_summed_vector_gradients():
    rng = np.random.default_rng(1)
    pool_ = rng.integers(-127, 128, size=(4, 8))
    pool_[0, 0] = 127                     # so the re-quantized latent pool is pool_ itself
    t = pool.PoolTransform(pool_, 8, [0], fallback=None)
    assert np.array_equal(t.pool, pool_)
    w = rng.normal(size=(3, 16))
    wq = t(0, w)
    idx, wf = t.quantize(w)
    assert np.allclose(wq, pool_[idx].reshape(3, 16) * 2.0 ** -wf)
    grad = rng.normal(size=w.shape)
    assert t.backward(0, grad) is grad                         # straight through
    gain = 127 / np.abs(t.latent).max()
    expect = np.zeros((4, 8))
    for f in range(3):
        for g in range(2):
            expect[idx[f, g]] += grad[f, 8 * g:8 * g + 8] * 2.0 ** -wf * gain
    assert np.allclose(t.grads()[0], expect)
    assert t.params()[0] is t.latent
    assert pool.PoolTransform(pool_, 8, [0], None, train_pool=False).params() == []


# -- storage ----------------------------------------------------------------------------


def test_paper_formula():
    # CR = W*B_w / (W/N*log2 S + 2**N*S*B_l): 1e6 weights, S = 64, 8-bit entries.
    cr = pool.paper_compression(1_000_000, 64, 8)
    assert cr == pytest.approx(8e6 / (1e6 / 8 * 6 + 256 * 64 * 8))
    assert pool.index_width(64) == 6 and pool.index_width(65) == 7 and pool.index_width(2) == 1


def test_storage_counts_bits():
    model = random_model(np.random.default_rng(0), scheme="pool", input_shape=(8, 4, 4),
                         convs=(3,), dense=(5,), pool_size=20, pool_bits=6, lut_bits=12)
    # conv 8 -> 3 pooled (3*1*9 vectors), max-pool, dense 3*2*2 = 12 inputs: int8.
    assert model.layers[0].is_pool and not model.layers[2].is_pool
    s = pool.storage(model)
    assert (s.weights, s.pooled_weights) == (3 * 72 + 5 * 12, 3 * 72)
    assert s.index_storage == 27 * 5                      # ceil(log2 20) = 5 bits
    assert s.pool_storage == 20 * 8 * 6
    assert s.lut_storage == 256 * 20 * 12
    assert s.int8_storage == 8 * 60
    assert s.streamed == 135 + 960 + 480 and s.onchip == 135 + 61440 + 480
    assert s.streamed_per_weight == pytest.approx(s.streamed / 276)
    assert s.paper_cr == pytest.approx(pool.paper_compression(216, 20, 12))
    assert json.loads(json.dumps(s.as_dict()))["streamed"] == s.streamed
    with pytest.raises(ValueError, match="not 'pool'"):
        pool.storage(random_model(np.random.default_rng(0), scheme="int8"))


# -- model file ---------------------------------------------------------------------------

ROUND_TRIP = [(16, 8, 16), (300, 12, 20), (2, 2, 4)]


@pytest.mark.parametrize("size, pool_bits, lut_bits", ROUND_TRIP,
                         ids=[f"S{s}-p{p}-l{lb}" for s, p, lb in ROUND_TRIP])
def test_round_trip(tmp_path, size, pool_bits, lut_bits):
    model = random_model(np.random.default_rng(size), scheme="pool", input_shape=(8, 4, 3),
                         convs=(8, 5), dense=(4,), pool_size=size, pool_bits=pool_bits,
                         lut_bits=lut_bits)
    path = tmp_path / "pool.npz"
    save_model(model, path)
    back = load_model(path)
    assert (back.scheme, back.pool_bits, back.lut_bits) == ("pool", pool_bits, lut_bits)
    assert np.array_equal(back.pool, model.pool)
    assert back.pool.dtype == (np.int8 if pool_bits <= 8 else np.int16)
    for a, b in zip(model.layers, back.layers, strict=True):
        assert (a.index is None) == (b.index is None) and (a.weight is None) == (b.weight is None)
        if a.index is not None:
            assert np.array_equal(a.index, b.index)
            assert b.index.dtype == (np.uint8 if size <= 256 else np.uint16)
    x = np.random.default_rng(1).integers(0, 256, size=(3, 8, 4, 3))
    assert np.array_equal(golden.run(model, x, bits=5), golden.run(back, x, bits=5))


def test_old_schemes_write_no_pool_fields(tmp_path):
    model = random_model(np.random.default_rng(0), scheme="int8")
    save_model(model, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as npz:
        header = json.loads(bytes(npz["header"]).decode())
        assert "pool" not in npz.files and not any(n.endswith(".index") for n in npz.files)
    assert "pool_bits" not in header and "lut_bits" not in header and header["version"] == 1
    assert load_model(tmp_path / "m.npz").pool is None


def _pool_model() -> QuantModel:
    """conv3x3 8 -> 8 pooled (layer 0), max-pool (1), dense 8*2*2 -> 3 pooled (2)."""
    return random_model(np.random.default_rng(7), scheme="pool", input_shape=(8, 4, 4),
                        convs=(8,), dense=(3,), pool_size=16)


MALFORMED = {
    "index-out-of-range": (lambda a, h: a.__setitem__(
        "layer2.index", np.where(np.arange(12).reshape(3, 4) == 5, 16, a["layer2.index"])),
        ["layer 2", "'index'", "must be in 0..15 (pool of 16 vectors)", "..16"]),
    "pool-wrong-shape": (lambda a, h: a.__setitem__("pool", a["pool"][:, :4]),
                         ["model", "'pool'", "(16, 4)", "(S, 8)"]),
    "pool-one-vector": (lambda a, h: a.__setitem__("pool", a["pool"][:1]),
                        ["model", "'pool'", "2..65536"]),
    "pool-missing": (lambda a, h: a.pop("pool"), ["model", "'pool'", "needs its pool"]),
    "pool-float": (lambda a, h: a.__setitem__("pool", a["pool"].astype(np.float32)),
                   ["model", "'pool'", "integers"]),
    "pool-value-range": (lambda a, h: h.__setitem__("pool_bits", 4),
                         ["model", "'pool'", "-7..7", "pool_bits=4"]),
    "pool-bits-missing": (lambda a, h: h.pop("pool_bits"), ["model", "'pool_bits'", "2..16"]),
    "lut-bits-range": (lambda a, h: h.__setitem__("lut_bits", 40), ["'lut_bits'", "2..32"]),
    "lut-bits-string": (lambda a, h: h.__setitem__("lut_bits", "16"),
                        ["'lut_bits'", "integer"]),
    "index-float": (lambda a, h: a.__setitem__("layer0.index", a["layer0.index"] + 0.5),
                    ["layer 0", "'index'", "integers"]),
    "index-shape": (lambda a, h: a.__setitem__("layer2.index", a["layer2.index"][:, :3]),
                    ["layer 2", "'index'", "shape", "(Co, 4)"]),
    "index-and-weight": (lambda a, h: a.__setitem__("layer0.weight",
                                                    np.zeros((8, 8, 3, 3), np.int8)),
                         ["layer 0", "'index'", "only"]),
    "neither-index-nor-weight": (lambda a, h: a.pop("layer2.index"),
                                 ["layer 2", "'index'", "'weight'"]),
    "k-on-pool-layer": (lambda a, h: a.__setitem__("layer0.k", np.ones(8, np.uint8)),
                        ["layer 0", "'k'"]),
    "pool-in-int8-model": (lambda a, h: h.__setitem__("scheme", "int8"),
                           ["model", "'pool'", "only scheme 'pool'"]),
    "index-in-int8-model": (lambda a, h: (a.pop("pool"), h.__setitem__("scheme", "int8")),
                            ["layer 0", "'index'", "only scheme 'pool'"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_pool_file(tmp_path, case):
    edit, needles = MALFORMED[case]
    good = tmp_path / "good.npz"
    save_model(_pool_model(), good)
    with np.load(good) as npz:
        arrays = {name: npz[name] for name in npz.files}
    header = json.loads(bytes(arrays.pop("header")).decode())
    edit(arrays, header)
    bad = tmp_path / "bad.npz"
    np.savez(bad, header=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
    with pytest.raises(ModelError) as info:
        load_model(bad)
    message = str(info.value)
    assert str(bad) in message, message
    for needle in needles:
        assert needle in message, f"{case}: {needle!r} not in {message!r}"


def test_channels_that_cannot_be_grouped():
    model = _pool_model()
    # A 12-channel conv whose weights are given as pool indices.
    conv = Layer("conv3x3", (12, 4, 4), (8, 4, 4), index=np.zeros((8, 1, 3, 3), np.uint8),
                 bias=np.zeros(8, np.int64), shift=3, relu=True)
    bad = QuantModel("pool", 8, (12, 4, 4), 8, [conv] + model.layers[1:], pool=model.pool,
                     pool_bits=8, lut_bits=16)
    with pytest.raises(ModelError, match="layer 0: field 'index': 12 input channels cannot "
                                         "be grouped into 8-vectors"):
        bad.validate()
    dense = Layer("dense", (12, 1, 1), (2,), index=np.zeros((2, 1), np.uint8),
                  bias=np.zeros(2, np.int64))
    with pytest.raises(ModelError, match="layer 0: field 'index': 12 inputs cannot"):
        QuantModel("pool", 8, (12, 1, 1), 8, [dense], pool=model.pool, pool_bits=8,
                   lut_bits=16).validate()
    with pytest.raises(ModelError, match="only scheme 'pool' models have a pool"):
        QuantModel("int8", 8, (1, 1, 1), 8, [], pool=model.pool).validate()


def test_int_weight_of_a_pool_layer_points_to_layer_weight():
    model = _pool_model()
    with pytest.raises(ModelError, match="layer_weight"):
        _ = model.layers[0].int_weight
    assert model.layer_weight(0).shape == (8, 8, 3, 3)
    assert model.layers[0].fan_in == 72 and model.layers[2].fan_in == 32


# -- compression of the digits model --------------------------------------------------------


@pytest.fixture(scope="module")
def digits_pool64(digits_float, digits_data):
    x_train, y_train, x_test, y_test = digits_data
    return compress(digits_float, "pool", x_train=x_train, y_train=y_train, x_test=x_test,
                    y_test=y_test, pool_size=64, progress=False)


def test_digits_pool_model_structure(digits_pool64, tmp_path):
    qm = digits_pool64
    assert qm.scheme == "pool" and qm.pool.shape == (64, 8)
    assert [layer.is_pool for layer in qm.layers if layer.is_mac] == [False, True, True]
    assert qm.layers[0].weight is not None                 # 1 input channel: int8
    assert qm.meta["lut_shift"] == 0 and qm.meta["pool_layers"] == [2, 4]
    s = qm.meta["storage"]
    # 16*1*9 + 10*8 = 224 vectors of 6 bits; 64*8 8-bit pool values; 72 int8 weights.
    assert (s["index_storage"], s["pool_storage"], s["int8_storage"]) == (1344, 4096, 576)
    assert s["lut_storage"] == 256 * 64 * 16 and s["weights"] == 1864
    # For a power-of-two S the paper's formula is the pooled layers' on-chip figure.
    assert s["pooled_onchip_per_weight"] == pytest.approx(8 / s["paper_cr"])
    save_model(qm, tmp_path / "p.npz")
    assert load_model(tmp_path / "p.npz").meta["storage"] == s


def test_digits_pool_accuracy_near_float(digits_pool64, digits_float, digits_data):
    _, _, x_test, y_test = digits_data
    float_acc = digits_float.accuracy(x_test, y_test)
    acc = evaluate(digits_pool64, x_test, y_test)
    print(f"\nfloat {float_acc:.4f}  pool S=64 {acc:.4f}")
    # Measured 0.9694 (float 0.9778); seeds 1-3 gave 0.953..0.967.
    assert acc >= float_acc - 0.03, f"pool S=64 {acc:.4f} vs float {float_acc:.4f}"
    assert digits_pool64.meta["accuracy"] == acc


def test_digits_accuracy_vs_activation_bits(digits_pool64, digits_data):
    _, _, x_test, y_test = digits_data
    acc = {bits: evaluate(digits_pool64, x_test, y_test, bits=bits) for bits in range(8, 0, -1)}
    print("\nbits: " + "  ".join(f"{b}:{a:.3f}" for b, a in acc.items()))
    assert acc[8] == evaluate(digits_pool64, x_test, y_test)
    # Measured 0.969 0.969 0.967 0.967 0.939 0.881 0.406 0.100 for 8..1 bits.
    assert min(acc[b] for b in (5, 6, 7)) >= acc[8] - 0.03, acc
    assert acc[4] >= acc[8] - 0.1, acc
    assert acc[1] < 0.5 < acc[4], acc       # one bit-plane is not enough, four are
    assert acc[2] < acc[4] < acc[8] + 0.02, acc


def test_narrow_lut_compresses_and_agrees_in_both_modes(digits_float, digits_data):
    x_train, y_train, x_test, y_test = digits_data
    qm = compress(digits_float, "pool", x_train=x_train, y_train=y_train, pool_size=16,
                  lut_bits=8, epochs=2, progress=False)
    assert qm.meta["lut_shift"] >= 1 and qm.lut_bits == 8
    x = qm.quantize_input(x_test[:50])
    assert np.array_equal(golden.run(qm, x), golden.run(qm, x, mode="precompute"))
    acc = evaluate(qm, x_test, y_test)
    assert acc > 0.5, f"the 2**-lut_shift accumulator scale is not accounted for: {acc}"


@pytest.mark.parametrize("kwargs, needle", [
    ({"pool_size": 1}, "pool_size"), ({"pool_size": 257}, "pool_size"),
    ({"pool_bits": 1}, "pool_bits"), ({"lut_bits": 33}, "lut_bits"),
])
def test_compress_rejects_bad_pool_options(digits_float, digits_data, kwargs, needle):
    x_train, y_train, _, _ = digits_data
    with pytest.raises(ValueError, match=needle):
        compress(digits_float, "pool", x_train=x_train, y_train=y_train, epochs=0,
                 progress=False, **kwargs)


def test_compress_needs_a_poolable_layer():
    rng = np.random.default_rng(0)
    model = FloatModel([Conv3x3(1, 3, rng), ReLU(), MaxPool2(), Dense(3 * 2 * 2, 2, rng)],
                       input_shape=(1, 4, 4))
    x = rng.random((4, 1, 4, 4))
    with pytest.raises(ValueError, match="nothing to pool"):
        compress(model, "pool", x_train=x, y_train=np.array([0, 1, 0, 1]), epochs=0,
                 progress=False)


def test_cli_compress_pool(tmp_path, digits_cache, digits_float, capsys):
    out = tmp_path / "pool16.npz"
    code = main(["compress", "--scheme", "pool", "--pool-size", "16", "--pool-bits", "6",
                 "--lut-bits", "8", "--epochs", "1", "--cache-dir", str(digits_cache),
                 "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    qm = load_model(out)
    assert (qm.scheme, len(qm.pool), qm.pool_bits, qm.lut_bits) == ("pool", 16, 6, 8)
    assert "compressed accuracy" in capsys.readouterr().out
    code = main(["compress", "--scheme", "pool", "--pool-size", "1", "--epochs", "0",
                 "--cache-dir", str(digits_cache), "-o", str(tmp_path / "bad.npz")])
    assert code == 2 and "pool_size" in capsys.readouterr().err


def test_image_storage_counts_the_packed_rows(digits_pool64):
    """The pool engine's image: streamed bits are its index, pool and int8 rows at their
    packed widths, on-chip bits put one lookup table per lane in place of the pool."""
    from shiftpool.sw.compile.fit import fit_config
    from shiftpool.sw.compile.image import compile_model
    from shiftpool.sw.schemes.pool import image_storage

    image = compile_model(digits_pool64, fit_config(digits_pool64, lanes=2))
    store = image_storage(image)
    rows = {name: len(image.regions[name]) * image.region_width(name)
            for name in ("indices", "pool", "weights")}
    assert store.streamed == sum(rows.values())
    assert store.onchip == rows["indices"] + rows["weights"] + 2 * 256 * 64 * 16
    assert store.weights == pool.storage(digits_pool64).weights
    # Padding lanes and the shift field make the image no smaller than the model count.
    assert store.streamed >= pool.storage(digits_pool64).streamed
