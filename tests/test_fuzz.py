"""Fuzzing the model-file reader and the command line's input checks.

Hundreds of mutated model files (bytes flipped, cut or appended; header fields
deleted or given values of the wrong type, sign or size; arrays retyped, reshaped,
dropped or filled with extreme values) and mutated input files go through
``shiftpool sim``. Every one must end in exactly one ``error:`` line with exit status
2 and no output file: never a traceback. The seeds are printed; set
``SHIFTPOOL_SEED`` to run others (``tests/conftest.py``).
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from shiftpool.sim.kit import seeds
from shiftpool.sw.model.file import ModelError, read_model, save_model
from shiftpool.sw.model.randmodel import random_model
from shiftpool.sw.schemes import golden
from test_cli import one_line_error

from shiftpool.cli import main

MUTANTS = 300

#: JSON values of every type and some extreme sizes, to put where a field was.
ODD_VALUES = [None, True, -1, 0, 2000, 1 << 70, -(1 << 70), 1.5, float("nan"), "8", "",
              [], [1, 2], [-1, 2, 2], {}, {"a": 1}]


def _seed_models(rng) -> dict:
    """Valid models of every stored scheme to mutate."""
    models = {}
    for scheme in ("flightnn", "int8", "pool"):
        models[scheme] = random_model(
            rng, scheme=scheme, k_mode="mixed", act_bits=int(rng.integers(2, 9)),
            exp_bits=int(rng.integers(1, 5)), input_shape=(8, 4, 4), convs=(8,), pool=True,
            dense=(4,))
    return models


def _members(raw: bytes) -> dict:
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _pack(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _mutate_header(rng, header: dict) -> dict:
    """One field of the header (or of one of its layers) deleted or replaced."""
    target = header
    if header.get("layers") and rng.random() < 0.6:
        target = header["layers"][int(rng.integers(len(header["layers"])))]
    key = list(target)[int(rng.integers(len(target)))]
    if rng.random() < 0.25:
        del target[key]
    else:
        target[key] = ODD_VALUES[int(rng.integers(len(ODD_VALUES)))]
    return header


def _mutate_array(rng, arrays: dict) -> dict:
    """One array dropped, retyped, reshaped or filled with extreme values."""
    names = [n for n in arrays if n != "header"]
    name = names[int(rng.integers(len(names)))]
    arr = arrays[name]
    how = int(rng.integers(5))
    if how == 0:
        del arrays[name]
    elif how == 1:
        arrays[name] = arr.astype([np.float64, np.bool_, np.int64, np.uint64][rng.integers(4)])
    elif how == 2:
        arrays[name] = arr.reshape(-1)[: max(0, arr.size - int(rng.integers(1, 3)))]
    elif how == 3:
        extreme = [np.iinfo(np.int64).min, np.iinfo(np.int64).max, -129, 300, 1 << 40]
        flat = arr.astype(np.int64).reshape(-1)
        if flat.size:
            flat[int(rng.integers(flat.size))] = extreme[int(rng.integers(len(extreme)))]
        arrays[name] = flat.reshape(arr.shape)
    else:
        arrays[f"stray{int(rng.integers(100))}"] = arr
        arrays[name] = np.zeros((0,), dtype=np.int8)
    return arrays


def mutate_model_file(rng, raw: bytes) -> bytes:
    """A mutant of the model file ``raw``."""
    kind = int(rng.integers(6))
    if kind == 0:                                   # bytes flipped
        data = bytearray(raw)
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 8))):
            data[pos] ^= int(rng.integers(1, 256))
        return bytes(data)
    if kind == 1:                                   # cut short
        return raw[: int(rng.integers(0, len(raw)))]
    if kind == 2:                                   # random bytes, or garbage appended
        junk = rng.integers(0, 256, size=int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
        return junk if rng.random() < 0.5 else raw + junk
    arrays = _members(raw)
    if kind in (3, 4):                              # one header field
        header = json.loads(bytes(arrays["header"]).decode())
        text = json.dumps(_mutate_header(rng, header))
        arrays["header"] = np.frombuffer(text.encode(), dtype=np.uint8)
    else:                                           # one array
        arrays = _mutate_array(rng, arrays)
    return _pack(arrays)


def test_mutated_model_files_get_one_error_line(tmp_path, capsys):
    seed = seeds(1, 20260)[0]
    print(f"fuzz seed {seed}")
    rng = np.random.default_rng(seed)
    originals = {}
    for scheme, model in _seed_models(rng).items():
        path = tmp_path / f"{scheme}.npz"
        save_model(model, path)
        originals[scheme] = path.read_bytes()
    x = tmp_path / "x.npy"
    out = tmp_path / "y.npy"
    readable = 0
    for n in range(MUTANTS):
        scheme = list(originals)[n % len(originals)]
        path = tmp_path / "mutant.npz"
        path.write_bytes(mutate_model_file(rng, originals[scheme]))
        # The reader itself: a model that validates, or ModelError; nothing else.
        try:
            model = read_model(path)
        except ModelError:
            model = None
        if model is not None:
            readable += 1
            xi = rng.integers(0, 1 << model.act_bits, size=(1, *model.input_shape))
            golden.run(model, xi)
            np.save(x, xi)
        else:
            np.save(x, np.zeros((1, 8, 4, 4), dtype=np.int64))
        # The command line: a readable mutant gets as far as the engine size (lanes 0
        # is refused before any simulation), an unreadable one stops at the model.
        code = main(["sim", str(path), "--inputs", str(x), "--outputs", str(out),
                     "--lanes", "0"])
        _, err = capsys.readouterr()
        assert code == 2, f"mutant {n} (seed {seed}): exit {code}\n{err}"
        line = one_line_error(err)
        assert len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1, err
        assert ("'lanes'" in line) == (model is not None), (n, line)
        assert not out.exists()
    # Some mutations (a flipped byte in padding, a stray array) leave a valid model.
    assert 0 < readable < MUTANTS


def _bad_inputs(rng, shape) -> list:
    """Input arrays ``sim`` must refuse: ``(array, words without --quantize, words with
    --quantize)``; ``None`` where the array is valid in that mode (quantizing clips)."""
    n = int(rng.integers(1, 4))
    good = rng.integers(0, 4, size=(n, *shape))
    nan = good.astype(np.float64)
    nan.reshape(-1)[int(rng.integers(nan.size))] = np.nan
    return [
        (good.reshape(n, -1), "shape", "shape"),
        (good[..., :-1], "shape", "shape"),
        (good + 1000, "0..", None),
        (good - 5, "0..", None),
        (good.astype(np.float32), "--quantize", None),
        (good.astype(np.bool_), "--quantize", None),
        (good.astype(np.complex64), "--quantize", "complex64"),
        (nan, "--quantize", "NaN"),
        (np.array(["a"] * good.size).reshape(good.shape), "--quantize", "<U1"),
        (good.reshape(-1)[:0], "shape", "shape"),
        (np.int64(3), "shape", "shape"),
    ]


@pytest.mark.parametrize("quantize", [False, True])
def test_mutated_inputs_get_one_error_line(tmp_path, capsys, quantize):
    seed = seeds(1, 777)[0]
    print(f"fuzz seed {seed}")
    rng = np.random.default_rng(seed)
    model = _seed_models(rng)["flightnn"]
    path = tmp_path / "m.npz"
    save_model(model, path)
    out = tmp_path / "sub" / "y.npy"
    # Files that are not a single .npy array.
    (tmp_path / "junk.npy").write_bytes(rng.integers(0, 256, 64, dtype=np.uint8).tobytes())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x.npy", b"")
    (tmp_path / "zip.npy").write_bytes(buf.getvalue())
    files = [(tmp_path / "junk.npy", "cannot read"), (tmp_path / "zip.npy", ".npz"),
             (tmp_path / "missing.npy", "missing.npy")]
    for i in range(20):
        for j, (arr, plain, quantized) in enumerate(_bad_inputs(rng, model.input_shape)):
            words = quantized if quantize else plain
            if words is not None:
                p = tmp_path / f"x{i}_{j}.npy"
                np.save(p, arr)
                files.append((p, words))
    for p, words in files:
        argv = ["sim", str(path), "--inputs", str(p), "--outputs", str(out)]
        code = main(argv + (["--quantize"] if quantize else []))
        _, err = capsys.readouterr()
        assert code == 2, (p, err)
        assert words in one_line_error(err), (p, err)
        assert not out.exists()
