"""The model file (``shiftpool.sw.model.file``): round trips of random models, every kind of
malformed file rejected with a message that names the layer and the field, atomic
writes."""

from __future__ import annotations

import errno
import io
import json
import os
import zipfile

import numpy as np
import pytest
from shiftpool.sw.model import file as model_mod
from shiftpool.sw.model.file import Layer, ModelError, QuantModel, load_model, save_model
from shiftpool.sw.model.randmodel import random_model
from shiftpool.sw.schemes import golden

ROUND_TRIP_CASES = [(scheme, k_mode, seed) for scheme, k_modes in
                    (("flightnn", ("k1", "k2", "mixed")), ("int8", ("mixed",)))
                    for k_mode in k_modes for seed in range(3)]


def random_case_model(scheme: str, k_mode: str, seed: int) -> QuantModel:
    """A random model whose shapes, widths and bits also depend on ``seed``."""
    rng = np.random.default_rng(seed)
    return random_model(
        rng, scheme=scheme, k_mode=k_mode, act_bits=int(rng.integers(2, 9)),
        exp_bits=int(rng.integers(1, 5)),
        input_shape=(int(rng.integers(1, 4)), int(rng.integers(2, 7)), int(rng.integers(2, 7))),
        convs=tuple(int(c) for c in rng.integers(1, 6, size=int(rng.integers(1, 3)))),
        pool=bool(rng.integers(0, 2)),
        dense=tuple(int(c) for c in rng.integers(1, 9, size=int(rng.integers(1, 3)))))


def random_inputs(rng: np.random.Generator, model: QuantModel, n: int) -> np.ndarray:
    hi = (1 << model.act_bits) - 1
    x = rng.integers(0, hi + 1, size=(n, *model.input_shape))
    return np.where(rng.random(x.shape) < 0.2, hi, x)


def read_npz(path) -> tuple[dict, dict]:
    """The arrays of a model file and its decoded JSON header."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    header = json.loads(bytes(arrays.pop("header")).decode())
    return arrays, header


def write_npz(path, arrays: dict, header: dict | bytes) -> None:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    np.savez(path, header=np.frombuffer(raw, dtype=np.uint8), **arrays)


# -- round trip ----------------------------------------------------------------------

@pytest.mark.parametrize("scheme, k_mode, seed", ROUND_TRIP_CASES,
                         ids=[f"{s}-{k}-seed{n}" for s, k, n in ROUND_TRIP_CASES])
def test_round_trip(tmp_path, scheme, k_mode, seed):
    model = random_case_model(scheme, k_mode, seed)
    model.meta = {"note": f"seed {seed}", "nested": {"a": [1, 2.5, None]}}
    # Accumulator-scale biases beyond 32 bits must survive (they are int64 in the file).
    model.layers[-1].bias[0] = (-1) ** seed * (2 ** 40 + 3)
    path = tmp_path / "sub" / "model.npz"
    save_model(model, path)
    back = load_model(path)
    where = f"{scheme} {k_mode} seed {seed}"
    for field in ("scheme", "act_bits", "exp_bits", "input_frac", "output_frac", "meta"):
        assert getattr(back, field) == getattr(model, field), f"{where}: {field}"
    assert tuple(back.input_shape) == tuple(model.input_shape), where
    assert len(back.layers) == len(model.layers), where
    for i, (a, b) in enumerate(zip(model.layers, back.layers, strict=True)):
        assert (b.kind, tuple(b.in_shape), tuple(b.out_shape)) == (
            a.kind, tuple(a.in_shape), tuple(a.out_shape)), f"{where}: layer {i}"
        assert (int(b.shift), bool(b.relu)) == (int(a.shift), bool(a.relu)), f"{where}: layer {i}"
        for name in ("weight", "terms", "k", "bias"):
            old, new = getattr(a, name), getattr(b, name)
            assert (old is None) == (new is None), f"{where}: layer {i} {name}"
            if old is not None:
                assert np.issubdtype(new.dtype, np.integer), f"{where}: layer {i} {name}"
                assert np.array_equal(old, new), f"{where}: layer {i} {name}"
    x = random_inputs(np.random.default_rng([seed, 1]), model, 5)
    expected = golden.run(model, x)
    assert expected.shape == (5, model.classes), where
    assert np.array_equal(golden.run(back, x), expected), where
    # A second save of the loaded model gives a file that loads to the same outputs.
    save_model(back, tmp_path / "again.npz")
    assert np.array_equal(golden.run(load_model(tmp_path / "again.npz"), x), expected), where


def test_save_overwrites_and_leaves_no_temp_files(tmp_path):
    seed = 11
    first = random_case_model("flightnn", "mixed", seed)
    second = random_case_model("int8", "mixed", seed + 1)
    path = tmp_path / "m.npz"
    save_model(first, path)
    save_model(second, path)
    assert load_model(path).scheme == "int8", f"seed {seed}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"], f"seed {seed}"


# -- malformed files -------------------------------------------------------------------

def _drop(name):
    def edit(arrays, header):
        del arrays[name]
    return edit


def _set_array(name, fn):
    def edit(arrays, header):
        arrays[name] = fn(arrays[name])
    return edit


def _set_header(fn):
    def edit(arrays, header):
        fn(header)
    return edit


def _k1_with_second_term(arrays, header):
    terms, k = arrays["layer0.terms"].copy(), arrays["layer0.k"].copy()
    k[1] = 1
    terms[1, 1, 0, 0, 0] = 3
    arrays["layer0.terms"], arrays["layer0.k"] = terms, k


def _setitem(key, value):
    return lambda h: h.__setitem__(key, value)


def _layer_setitem(index, key, value):
    return lambda h: h["layers"][index].__setitem__(key, value)


def _layer_delitem(index, key):
    return lambda h: h["layers"][index].pop(key)


# (scheme, edit, strings the message must contain). The random model is
# conv3x3 (layer 0) -> maxpool2 (layer 1) -> dense (layer 2).
MALFORMED = {
    "missing-terms": ("flightnn", _drop("layer0.terms"), ["layer 0", "'terms'"]),
    "missing-k": ("flightnn", _drop("layer2.k"), ["layer 2", "'k'"]),
    "missing-bias": ("flightnn", _drop("layer2.bias"), ["layer 2", "'bias'"]),
    "missing-weight": ("int8", _drop("layer0.weight"), ["layer 0", "'weight'"]),
    "missing-header": ("int8", lambda a, h: None, ["'header'", "missing"]),
    "terms-float": ("flightnn", _set_array("layer0.terms", lambda t: t.astype(np.float32)),
                    ["layer 0", "'terms'", "integers", "float32"]),
    "weight-float": ("int8", _set_array("layer2.weight", lambda w: w.astype(np.float64)),
                     ["layer 2", "'weight'", "integers"]),
    "bias-float": ("flightnn", _set_array("layer0.bias", lambda b: b.astype(np.float64)),
                   ["layer 0", "'bias'", "integers"]),
    "k-float": ("flightnn", _set_array("layer0.k", lambda k: k.astype(np.float64) + 0.5),
                ["layer 0", "'k'", "integers"]),
    "terms-shape": ("flightnn", _set_array("layer0.terms", lambda t: t[:, :, :1]),
                    ["layer 0", "'terms'", "shape"]),
    "terms-first-axis": ("flightnn", _set_array("layer2.terms", lambda t: t[:1]),
                         ["layer 2", "'terms'", "2 terms"]),
    "weight-shape": ("int8", _set_array("layer2.weight", lambda w: w[:, :-1]),
                     ["layer 2", "'weight'", "shape"]),
    "bias-short": ("int8", _set_array("layer0.bias", lambda b: b[:-1]), ["layer 0", "'bias'"]),
    "k-short": ("flightnn", _set_array("layer2.k", lambda k: k[:-1]), ["layer 2", "'k'"]),
    "k-is-3": ("flightnn", _set_array("layer0.k", lambda k: np.full_like(k, 3)),
               ["layer 0", "'k'", "1 or 2"]),
    "k-inconsistent-with-terms": ("flightnn", _k1_with_second_term,
                                  ["layer 0", "'terms'", "filter 1 has k=1"]),
    "term-code-range": ("flightnn", _set_array("layer2.terms", lambda t: np.where(
        np.arange(t.size).reshape(t.shape) == 0, 9, t).astype(np.int8)),
                        ["layer 2", "'terms'", "-8..8"]),
    "term-code-int8-min": ("flightnn", _set_array("layer0.terms", lambda t: np.where(
        np.arange(t.size).reshape(t.shape) == 0, -128, t).astype(np.int8)),
                           ["layer 0", "'terms'", "-8..8", "-128"]),
    "int8-weight-range": ("int8", _set_array("layer0.weight", lambda w: np.full_like(w, -128)),
                          ["layer 0", "'weight'", "-127..127"]),
    "k-on-int8": ("int8", lambda a, h: a.__setitem__("layer2.k", np.ones(7, np.uint8)),
                  ["layer 2", "'k'", "int8"]),
    "weights-in-both": ("int8", lambda a, h: a.__setitem__(
        "layer0.terms", np.zeros((2, *a["layer0.weight"].shape), np.int8)),
                        ["layer 0", "'weight'"]),
    "unknown-version": ("flightnn", _set_header(_setitem("version", 2)), ["'version'", "2"]),
    "wrong-format": ("flightnn", _set_header(_setitem("format", "other")), ["'format'"]),
    "unknown-scheme": ("flightnn", _set_header(_setitem("scheme", "binary")),
                       ["'scheme'", "'binary'"]),
    "scheme-mismatch": ("flightnn", _set_header(_setitem("scheme", "int8")),
                        ["layer 0", "'weight'"]),
    "act-bits-range": ("int8", _set_header(_setitem("act_bits", 17)), ["'act_bits'", "17"]),
    "act-bits-string": ("int8", _set_header(_setitem("act_bits", "8")), ["'act_bits'", "integer"]),
    "act-bits-float": ("int8", _set_header(_setitem("act_bits", 8.0)), ["'act_bits'", "integer"]),
    "exp-bits-range": ("flightnn", _set_header(_setitem("exp_bits", 0)), ["'exp_bits'"]),
    "input-shape": ("int8", _set_header(_setitem("input_shape", [2, 6])), ["'input_shape'"]),
    "missing-act-bits": ("int8", _set_header(lambda h: h.pop("act_bits")),
                         ["'act_bits'", "missing"]),
    "missing-layer-kind": ("int8", _set_header(_layer_delitem(1, "kind")),
                           ["layer 1", "'kind'", "missing"]),
    "unknown-kind": ("int8", _set_header(_layer_setitem(1, "kind", "avgpool")),
                     ["layer 1", "'kind'", "'avgpool'"]),
    "in-shape-chain": ("int8", _set_header(_layer_setitem(1, "in_shape", [5, 6, 4])),
                       ["layer 1", "'in_shape'"]),
    "out-shape": ("flightnn", _set_header(_layer_setitem(2, "out_shape", [8])),
                  ["layer 2", "'out_shape'", "(7,)"]),
    "last-relu": ("flightnn", _set_header(_layer_setitem(2, "relu", True)),
                  ["layer 2", "'relu'"]),
    "relu-string": ("int8", _set_header(_layer_setitem(0, "relu", "yes")),
                    ["layer 0", "'relu'"]),
    "negative-shift": ("int8", _set_header(_layer_setitem(0, "shift", -1)),
                       ["layer 0", "'shift'"]),
    "layers-not-list": ("int8", _set_header(_setitem("layers", "conv")), ["'layers'"]),
    "layer-entry-not-object": ("int8", _set_header(lambda h: h["layers"].__setitem__(1, 5)),
                               ["layer 1"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file(tmp_path, case):
    scheme, edit, needles = MALFORMED[case]
    seed = 5
    model = random_model(np.random.default_rng(seed), scheme=scheme, exp_bits=3,
                         k_mode="k2" if case == "k-inconsistent-with-terms" else "mixed")
    good = tmp_path / "good.npz"
    save_model(model, good)
    arrays, header = read_npz(good)
    edit(arrays, header)
    bad = tmp_path / "bad.npz"
    if case == "missing-header":
        np.savez(bad, **arrays)
    else:
        write_npz(bad, arrays, header)
    with pytest.raises(ModelError) as info:
        load_model(bad)
    message = str(info.value)
    assert str(bad) in message, f"{case}: the file is not named: {message}"
    for needle in needles:
        assert needle in message, f"{case} (seed {seed}): {needle!r} not in {message!r}"


@pytest.mark.parametrize("raw, needle", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe\x00garbage", "not JSON"),
    (b"[1, 2, 3]", "JSON object"),
    (b'"a string"', "JSON object"),
], ids=["syntax", "not-utf8", "list", "string"])
def test_bad_header_json(tmp_path, raw, needle):
    good = tmp_path / "good.npz"
    save_model(random_model(np.random.default_rng(1)), good)
    arrays, _ = read_npz(good)
    write_npz(tmp_path / "bad.npz", arrays, raw)
    with pytest.raises(ModelError) as info:
        load_model(tmp_path / "bad.npz")
    assert "'header'" in str(info.value) and needle in str(info.value), str(info.value)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_truncated_file(tmp_path, fraction):
    good = tmp_path / "good.npz"
    save_model(random_model(np.random.default_rng(2)), good)
    raw = good.read_bytes()
    bad = tmp_path / "cut.npz"
    bad.write_bytes(raw[:int(len(raw) * fraction)])
    with pytest.raises(ModelError) as info:
        load_model(bad)
    message = str(info.value)
    assert str(bad) in message and "not a shiftpool model file" in message, (fraction, message)


def test_corrupt_member_names_the_field(tmp_path):
    """A zip whose directory is intact but whose compressed array data is damaged."""
    good = tmp_path / "good.npz"
    save_model(random_model(np.random.default_rng(3), scheme="flightnn"), good)
    raw = bytearray(good.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as z:
        info = z.getinfo("layer0.terms.npy")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    mid = start + info.compress_size // 3
    raw[mid:mid + 40] = bytes(40)
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match=r"field 'layer0\.terms' cannot be read"):
        load_model(bad)


@pytest.mark.parametrize("content", [b"", b"hello, this is text\n", b"PK\x03\x04broken"],
                         ids=["empty", "text", "zip-magic"])
def test_not_a_zip(tmp_path, content):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(content)
    with pytest.raises(ModelError, match="not a shiftpool model file"):
        load_model(bad)


def test_single_npy_array_is_not_a_model(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.arange(4))
    with pytest.raises(ModelError, match="single array"):
        load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="no such model file"):
        load_model(tmp_path / "absent.npz")


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(ModelError, match=str(tmp_path)):
        load_model(tmp_path)


# -- validation of in-memory models ------------------------------------------------------

def test_validate_names_layer_and_field():
    model = random_model(np.random.default_rng(4), scheme="int8")
    model.layers[2].bias = model.layers[2].bias[:3]
    with pytest.raises(ModelError, match=r"^layer 2: field 'bias': needs 7 integers"):
        model.validate()
    model = random_model(np.random.default_rng(4), scheme="int8")
    model.layers.append(Layer("maxpool2", (7,), (7,)))
    with pytest.raises(ModelError, match=r"layer 3: field 'kind': the last layer"):
        model.validate()


# -- atomic writes -------------------------------------------------------------------

def _snapshot(directory) -> dict:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_invalid_model_is_not_written(tmp_path):
    seed = 6
    good = random_model(np.random.default_rng(seed))
    path = tmp_path / "m.npz"
    save_model(good, path)
    before = _snapshot(tmp_path)
    bad = random_model(np.random.default_rng(seed))
    bad.layers[0].k = np.full_like(bad.layers[0].k, 3)
    with pytest.raises(ModelError, match="layer 0: field 'k'"):
        save_model(bad, path)
    with pytest.raises(ModelError):
        save_model(bad, tmp_path / "new.npz")
    assert _snapshot(tmp_path) == before, f"seed {seed}"


def test_unserializable_meta_writes_nothing(tmp_path):
    model = random_model(np.random.default_rng(7))
    model.meta = {"when": object()}
    with pytest.raises((TypeError, ModelError)):
        save_model(model, tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    """Disk full half-way through the write: the old file stays, no temp file remains."""
    seed = 8
    path = tmp_path / "m.npz"
    save_model(random_model(np.random.default_rng(seed)), path)
    before = _snapshot(tmp_path)
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[:len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model_mod.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match="No space left"):
        save_model(random_model(np.random.default_rng(seed + 1), scheme="int8"), path)
    monkeypatch.undo()
    assert _snapshot(tmp_path) == before, f"seed {seed}"
    assert load_model(path).scheme == "flightnn", f"seed {seed}"


def test_failed_rename_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    save_model(random_model(np.random.default_rng(9)), path)
    before = _snapshot(tmp_path)

    def refuse(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(model_mod.os, "replace", refuse)
    with pytest.raises(PermissionError):
        save_model(random_model(np.random.default_rng(10)), path)
    monkeypatch.undo()
    assert _snapshot(tmp_path) == before


def test_save_onto_directory_leaves_no_temp_file(tmp_path):
    target = tmp_path / "dir.npz"
    target.mkdir()
    with pytest.raises(OSError):
        save_model(random_model(np.random.default_rng(12)), target)
    assert [p.name for p in tmp_path.iterdir()] == ["dir.npz"]
    assert list(target.iterdir()) == []


# -- issue 16: the docs' rules, one test each ------------------------------------------

@pytest.mark.parametrize("frac", [-1, 63, 2000])
def test_input_frac_out_of_range_is_named(frac):
    model = random_case_model("int8", "mixed", 0)
    model.input_frac = frac
    with pytest.raises(ModelError, match=r"model: field 'input_frac': .* out of range 0\.\.62"):
        model.validate()


def test_largest_input_frac_quantizes_without_overflow():
    model = random_case_model("int8", "mixed", 1)
    model.input_frac = model_mod.MAX_INPUT_FRAC
    model.validate()
    x = np.array([[1e300, -1e300, 0.0, np.inf, -np.inf, 1e-30]])
    q = model.quantize_input(x)
    top = (1 << model.act_bits) - 1
    assert q.tolist() == [[top, 0, 0, top, 0, 0]]


def test_nan_inputs_are_refused_with_their_position():
    model = random_case_model("int8", "mixed", 2)
    x = np.zeros((2, *model.input_shape))
    x[1, 0, 1, 0] = np.nan
    with pytest.raises(ModelError, match=r"inputs: 1 value\(s\) are NaN \(the first at index "
                                         r"\(1, 0, 1, 0\)\)"):
        model.quantize_input(x)


def test_float_bias_is_refused_for_its_type():
    model = random_case_model("int8", "mixed", 3)
    mac = next(i for i, layer in enumerate(model.layers) if layer.is_mac)
    model.layers[mac].bias = model.layers[mac].bias.astype(np.float64)
    with pytest.raises(ModelError, match=rf"layer {mac}: field 'bias': must hold integers, "
                                         r"not float64"):
        model.validate()


def test_random_bytes_are_not_a_model_file(tmp_path):
    path = tmp_path / "random.npz"
    path.write_bytes(np.random.default_rng(5).integers(0, 256, 300, dtype=np.uint8).tobytes())
    with pytest.raises(ModelError, match="not a shiftpool model file .*ZIP signature"):
        load_model(path)


def test_k_on_an_int8_layer_is_refused():
    model = random_case_model("int8", "mixed", 4)
    mac = next(i for i, layer in enumerate(model.layers) if layer.is_mac)
    model.layers[mac].k = np.ones(model.layers[mac].out_shape[0], dtype=np.uint8)
    with pytest.raises(ModelError, match=rf"layer {mac}: field 'k': int8 layers have no k"):
        model.validate()


def test_a_conv3x3_last_layer_is_refused():
    model = random_model(np.random.default_rng(6), scheme="int8", convs=(3,), pool=False,
                         dense=(2,))
    model.layers = model.layers[:1]
    model.layers[0].relu = False
    with pytest.raises(ModelError, match="layer 0: field 'kind': the last layer must be dense"):
        model.validate()
