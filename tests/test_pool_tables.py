"""The two organisations of the pool engine's lookup table (``docs/arithmetic.md``
§12.3): the golden model's half tables against the formula written here with plain
Python ints, exact tables identical in both organisations, and where the organisation
is recorded (model file, config, compiler, command line) with its bad-input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shiftpool.hw.config import AcceleratorConfig, ConfigError
from shiftpool.sw.compile.fit import fit_config
from shiftpool.sw.compile.image import compile_model
from shiftpool.sw.model.file import ModelError, load_model, save_model
from shiftpool.sw.model.randmodel import random_model
from shiftpool.sw.schemes import golden, pool_golden
from shiftpool.sw.schemes.registry import get_scheme

# -- references (plain Python ints and loops) ------------------------------------------


def half_entry(pool, p: int, nibble: int, high: bool) -> int:
    """``LO[nibble][p]`` (``high`` false) or ``HI[nibble][p]``, by the definition."""
    base = 4 if high else 0
    return sum(int(pool[p][base + j]) for j in range(4) if (nibble >> j) & 1)


def round_half_up(e: int, k: int) -> int:
    """``e / 2**k`` rounded to nearest, halves toward +infinity, in exact rationals."""
    return (2 * e + (1 << k)) // (1 << (k + 1))


def half_reference(pool, lut_bits: int) -> tuple[list, int]:
    """The half-table datapath's entries ``[256][S]`` and its shift: the smallest ``k``
    whose narrowed half entries all fit a signed ``lut_bits`` word, then per pattern
    ``q`` the narrowed low-nibble entry plus the narrowed high-nibble entry."""
    halves = [half_entry(pool, p, n, high) for p in range(len(pool)) for n in range(16)
              for high in (False, True)]
    top = 1 << (lut_bits - 1)
    k = 0
    while not all(-top <= round_half_up(e, k) <= top - 1 for e in halves):
        k += 1
    lut = [[round_half_up(half_entry(pool, p, q & 15, False), k)
            + round_half_up(half_entry(pool, p, q >> 4, True), k)
            for p in range(len(pool))] for q in range(256)]
    return lut, k


def random_pool(rng, size: int, pool_bits: int) -> np.ndarray:
    top = (1 << (pool_bits - 1)) - 1
    pool = rng.integers(-top, top + 1, size=(size, 8))
    pool[0, :4] = top        # a half's extremes are reached
    pool[-1, 4:] = -top
    return pool


# -- the golden model -------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6), ids=[f"seed{s}" for s in range(6)])
def test_half_tables_match_the_formula(seed):
    rng = np.random.default_rng(seed)
    pool_bits = int(rng.integers(2, 13))
    pool = random_pool(rng, int(rng.integers(2, 20)), pool_bits)
    for lut_bits in (2, 3, 5, pool_bits, pool_bits + 1, pool_bits + 2, 16):
        where = f"seed {seed}, pool_bits {pool_bits}, lut_bits {lut_bits}"
        want, k = half_reference(pool, lut_bits)
        lut, shift = pool_golden.table(pool, lut_bits, "half")
        assert shift == k, where
        assert lut.tolist() == want, where
        assert not lut[0].any(), where
        # Exact halves fit pool_bits + 2 signed bits: no narrowing from there on.
        if lut_bits >= pool_bits + 2:
            assert k == 0, where


@pytest.mark.parametrize("seed", range(4), ids=[f"seed{s}" for s in range(4)])
def test_exact_tables_are_identical_in_both_organisations(seed):
    """With ``k = 0`` in both, both organisations read the exact table, and a model run
    with either gives the same integers at every precision."""
    rng = np.random.default_rng(100 + seed)
    pool_bits = int(rng.integers(3, 9))
    lut_bits = pool_bits + 3 + int(rng.integers(0, 4))
    model = random_model(rng, scheme="pool", input_shape=(8, 4, 4), convs=(8,), dense=(3,),
                         pool_size=int(rng.choice([4, 16])), pool_bits=pool_bits,
                         lut_bits=lut_bits)
    full, k_full = pool_golden.table(model.pool, lut_bits, "full")
    half, k_half = pool_golden.table(model.pool, lut_bits, "half")
    assert k_full == k_half == 0, f"seed {seed}"
    exact = [[sum(int(model.pool[p][j]) for j in range(8) if (q >> j) & 1)
              for p in range(len(model.pool))] for q in range(256)]
    assert full.tolist() == half.tolist() == exact, f"seed {seed}"
    x = rng.integers(0, 256, size=(3, 8, 4, 4))
    runs = {}
    for organisation in ("full", "half"):
        model.pool_table = organisation
        runs[organisation] = [golden.run(model, x, bits=bits) for bits in (8, 3)]
    for a, b in zip(runs["full"], runs["half"], strict=True):
        assert np.array_equal(a, b), f"seed {seed}"


def test_narrowed_organisations_differ_and_run_uses_the_models():
    """A narrowed table: the organisation changes the integers, and the golden model
    reads the one the model names (checked against the formula's table)."""
    rng = np.random.default_rng(3)
    model = random_model(rng, scheme="pool", input_shape=(8, 1, 1), convs=(), pool=False,
                         dense=(4,), pool_size=8, pool_bits=8, lut_bits=7,
                         pool_table="half")
    want, k = half_reference(model.pool, 7)
    assert k > 0
    assert not np.array_equal(pool_golden.table(model.pool, 7, "full")[0], np.array(want))
    x = rng.integers(0, 256, size=(5, 8, 1, 1))
    patterns = [[sum(((int(v) >> b) & 1) << j for j, v in enumerate(row.ravel()))
                 for b in range(8)] for row in x]
    layer = model.layers[0]
    expect = [[int(layer.bias[f]) + sum(want[pat[b]][int(layer.index[f, 0])] << b
                                        for b in range(8))
               for f in range(4)] for pat in patterns]
    assert golden.run(model, x).tolist() == expect


def test_unknown_organisation_is_one_line():
    with pytest.raises(ModelError, match=r"^model: field 'pool_table': 'quarter' is unknown; "
                                         r"allowed: full, half"):
        pool_golden.table(np.zeros((2, 8), np.int64), 8, "quarter")
    with pytest.raises(ConfigError, match=r"^config field 'pool_table' = 'quarter' is "
                                          r"unknown; allowed: full, half"):
        AcceleratorConfig(engine="pool", pool_table="quarter")


# -- where the organisation is recorded ------------------------------------------------


def _pool_model(pool_table: str = "half", lut_bits: int = 16):
    return random_model(np.random.default_rng(7), scheme="pool", input_shape=(8, 4, 4),
                        convs=(8,), dense=(3,), pool_size=16, lut_bits=lut_bits,
                        pool_table=pool_table)


def test_model_file_records_the_organisation(tmp_path):
    model = _pool_model("half", lut_bits=8)
    path = tmp_path / "half.npz"
    save_model(model, path)
    with np.load(path) as npz:
        header = json.loads(bytes(npz["header"]).decode())
    assert header["pool_table"] == "half"
    back = load_model(path)
    assert back.pool_table == "half"
    x = np.random.default_rng(1).integers(0, 256, size=(2, 8, 4, 4))
    assert np.array_equal(golden.run(model, x), golden.run(back, x))
    # A file without the field (written before half tables) is a full-table model.
    with np.load(path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    del header["pool_table"]
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(tmp_path / "old.npz", **arrays)
    assert load_model(tmp_path / "old.npz").pool_table == "full"
    header["pool_table"] = "quarter"
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ModelError) as info:
        load_model(tmp_path / "bad.npz")
    message = str(info.value)
    assert "\n" not in message
    assert "model: field 'pool_table': 'quarter' is unknown; allowed: full, half" in message


def test_config_hashes_the_organisation_for_the_pool_engine_only():
    full = AcceleratorConfig(engine="pool")
    half = AcceleratorConfig(engine="pool", pool_table="half")
    assert full.hash != half.hash
    assert half.as_dict()["pool_table"] == "half"
    assert AcceleratorConfig.from_dict(half.as_dict()) == half
    assert "pool_table" not in AcceleratorConfig(engine="int8").as_dict()
    assert (AcceleratorConfig(engine="int8").hash
            == AcceleratorConfig(engine="int8", pool_table="half").hash)
    # A half entry sums two lut_bits words.
    assert (half.entry_bits, full.entry_bits) == (17, 16)
    assert half.weight_log2 == 16 and full.weight_log2 == 15


def test_fit_and_compile_follow_the_model():
    narrowed = _pool_model("half", lut_bits=8)
    assert pool_golden.model_lut(narrowed)[1] > 0
    assert fit_config(narrowed, lanes=2).pool_table == "half"
    # Narrowed entries are rounded for one organisation: the other is refused, by name.
    with pytest.raises(ConfigError) as info:
        fit_config(narrowed, lanes=2, pool_table="full")
    message = str(info.value)
    assert message.startswith("config field 'pool_table' = 'full' does not match the "
                              "model's 'half' table"), message
    assert "--pool-table half" in message and "\n" not in message
    # Exact tables are the same integers: either organisation runs the model.
    exact = _pool_model("full", lut_bits=16)
    cfg = fit_config(exact, lanes=2, pool_table="half")
    image = compile_model(exact, cfg)
    shift_field = image.regions["pool"][0] >> (8 * cfg.pool_bits)
    assert shift_field == 0


def test_scheme_declares_the_option():
    option = {o.name: o for o in get_scheme("pool").options}["pool_table"]
    assert (option.kind, option.default, option.choices) == (str, "full", ("full", "half"))
    assert option.check("half") == "half"
    with pytest.raises(ValueError, match="pool_table must be one of full, half, not 'x'"):
        option.check("x")


def test_storage_counts_half_tables():
    from shiftpool.sw.schemes.pool import storage

    full, half = storage(_pool_model("full")), storage(_pool_model("half"))
    assert full.lut_storage == 256 * 16 * 16
    assert half.lut_storage == 2 * 16 * 16 * 16
    assert half.index_storage == full.index_storage


# -- the command line -------------------------------------------------------------------


def _cli(capsys, *argv):
    from shiftpool.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_compress_and_generate_record_the_organisation(tmp_path, capsys, digits_cache):
    out = tmp_path / "half.npz"
    code, _, err = _cli(capsys, "compress", "--scheme", "pool", "--pool-size", "16",
                        "--pool-table", "half", "--lut-bits", "8", "--epochs", "0",
                        "--cache-dir", digits_cache, "-o", out)
    assert code == 0, err
    model = load_model(out)
    assert (model.pool_table, model.meta["pool_table"]) == ("half", "half")
    assert pool_golden.model_lut(model)[1] > 0          # narrowed: the organisation matters
    design = tmp_path / "design"
    code, _, err = _cli(capsys, "generate", out, "-o", design)
    assert code == 0, err
    manifest = json.loads((design / "manifest.json").read_text())
    assert manifest["config"]["pool_table"] == "half"
    assert manifest["cycles"]["table_build"] == 16 * 16        # 16 rows, 16 cycles each
    # The other organisation would round the narrowed entries otherwise: one line.
    code, _, err = _cli(capsys, "generate", out, "-o", tmp_path / "other", "--pool-table",
                        "full")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "'pool_table'" in lines[0], err
    assert not (tmp_path / "other").exists()
    # An unknown organisation is refused by the parser, naming the choices.
    with pytest.raises(SystemExit):
        _cli(capsys, "compress", "--scheme", "pool", "--pool-table", "quarter", "-o",
             tmp_path / "q.npz")
    assert "--pool-table: invalid choice: 'quarter'" in capsys.readouterr().err
    # --pool-table on a scheme that has no pool is named, as the other pool options are.
    code, _, err = _cli(capsys, "compress", "--scheme", "int8", "--pool-table", "half",
                        "--epochs", "0", "--cache-dir", digits_cache, "-o", tmp_path / "i.npz")
    assert code == 2 and "--pool-table is an option of scheme pool" in err, err


def test_memory_estimate_puts_half_tables_in_block_ram():
    """The host-side estimate (``sw/compile/resources.py``) follows the engine: a full
    table per lane goes to SPRAM when all copies fit, half tables to block RAM."""
    from shiftpool.sw.compile.resources import estimate_memories

    def lut(pool_table):
        cfg = AcceleratorConfig(engine="pool", lanes=2, pool_size=64, lut_bits=16,
                                pool_table=pool_table)
        fit = estimate_memories(cfg, "iCE40UP5K")
        return [p for p in fit.placements if p.need.name == "lut"][0]

    full, half = lut("full"), lut("half")
    # 256 * 64 entries of 16 bits = one 16K x 16 SPRAM per lane.
    assert (full.block.name, full.blocks) == ("SPRAM", 2)
    # 2 halves x 16 * 64 entries x 16 bits = 2 x 16 kbit = 8 EBR (4 kbit) per lane.
    assert (half.block.name, half.blocks) == ("EBR", 2 * 8)


def test_build_cycles_of_the_cycle_model():
    """Per pool row the engine writes 256 (full) or 16 (half) table rows, one per cycle,
    and takes the next load row one cycle later; the RTL check is in test_rtl.py."""
    from shiftpool.sw.compile.cycles import build_cycles, pool_row_accepts

    model = _pool_model("full")
    for pool_table, rows in (("full", 256), ("half", 16)):
        cfg = fit_config(model, lanes=2, pool_table=pool_table)
        assert build_cycles(compile_model(model, cfg)) == len(model.pool) * rows
        # Offered back to back from cycle 10, then one row late, one after a long gap.
        offers = [10, 11, 12 + rows, 2000]
        assert pool_row_accepts(cfg, offers) == [10, 11 + rows, 12 + 2 * rows, 2000]
    assert build_cycles(compile_model(*_int8_case())) == 0


def _int8_case():
    model = random_model(np.random.default_rng(2), scheme="int8")
    return model, fit_config(model, lanes=2, taps=4)


def test_worked_example_with_half_tables():
    """docs/arithmetic.md §12.10 at lut_bits = 3 with half tables, worked by hand there:
    k = 1 (the full table's is 2), hidden [6, 3], outputs [3, 6]."""
    from shiftpool.sw.model.file import Layer, QuantModel

    pool = np.array([[3, -1, 0, 2, -3, 1, 0, -2], [-2, 3, 1, 0, 1, -1, 3, 0]], np.int8)
    d0 = Layer("dense", (1, 2, 4), (2,), index=np.array([[0], [1]], np.uint8),
               bias=np.array([1, -2]), shift=1, relu=True)
    d1 = Layer("dense", (2,), (2,), weight=np.array([[1, -1], [0, 2]], np.int8),
               bias=np.array([0, 0]), shift=0, relu=False)
    m = QuantModel("pool", act_bits=3, input_shape=(1, 2, 4), input_frac=3, layers=[d0, d1],
                   pool=pool, pool_bits=3, lut_bits=3, pool_table="half")
    x = np.array([[[[5, 2, 7, 0], [1, 6, 3, 4]]]])
    assert pool_golden.model_lut(m)[1] == 1
    assert pool_golden.table(pool, 3, "full")[1] == 2
    lut = pool_golden.model_lut(m)[0]
    assert (lut[85].tolist(), lut[102].tolist(), lut[165].tolist()) == ([1, 2], [1, 3], [2, 0])
    assert [t.tolist() for t in golden.run(m, x, trace=True)[1][1:]] == [[[6, 3]], [[3, 6]]]
