"""The command line, end to end and on bad input: every failure is one line naming the
problem, exit code 2, and nothing half-written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shiftpool.sim import flow
from shiftpool.sw.compile.fit import fit_config
from shiftpool.sw.model.file import load_model, save_model
from shiftpool.sw.schemes import golden

from shiftpool.cli import main


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process; returns ``(exit code, stdout, stderr)``."""
    def run(*argv):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err
    return run


@pytest.fixture
def model_file(tmp_path, digits_models):
    path = tmp_path / "flightnn.npz"
    save_model(digits_models["flightnn"], path)
    return path


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err, err
    return lines[-1]


def test_compress_writes_a_model_that_matches_its_accuracy(cli, tmp_path, digits_cache,
                                                           digits_data):
    out = tmp_path / "m.npz"
    code, stdout, _ = cli("compress", "--scheme", "flightnn", "-o", out, "--cache-dir",
                          digits_cache, "--epochs", "2")
    assert code == 0
    model = load_model(out)
    assert model.scheme == "flightnn"
    _, _, x_test, y_test = digits_data
    acc = float(np.mean(golden.run(model, model.quantize_input(x_test)).argmax(1) == y_test))
    assert f"{acc:.4f}" in stdout


def test_generate_writes_verilog_and_manifest(cli, tmp_path, model_file, digits_models):
    out = tmp_path / "design"
    code, stdout, _ = cli("generate", model_file, "-o", out, "--lanes", "3", "--taps", "5")
    assert code == 0, stdout
    manifest = json.loads((out / "manifest.json").read_text())
    config = fit_config(digits_models["flightnn"], lanes=3, taps=5)
    assert manifest["config_hash"] == config.hash
    assert manifest["config"]["lanes"] == 3
    assert "module shiftpool_top" in (out / "shiftpool_top.v").read_text()
    assert set(json.loads((out / "image.json").read_text())) == set(manifest["memory_map"])
    # A second run refuses to overwrite without --force ...
    code, _, err = cli("generate", model_file, "-o", out)
    assert code == 2 and "--force" in one_line_error(err)
    # ... and replaces the folder with it.
    code, _, _ = cli("generate", model_file, "-o", out, "--lanes", "2", "--force")
    assert code == 0
    assert json.loads((out / "manifest.json").read_text())["config"]["lanes"] == 2


@pytest.mark.verilator
def test_sim_compares_with_golden(cli, tmp_path, model_file, digits_models, digits_data,
                                  sim_build_dir):
    model = digits_models["flightnn"]
    x = model.quantize_input(digits_data[2][:5])
    np.save(tmp_path / "x.npy", x)
    design = tmp_path / "design"
    assert cli("generate", model_file, "-o", design)[0] == 0
    # --outputs into a folder that does not exist yet: it is made
    out = tmp_path / "new" / "y.npy"
    code, stdout, _ = cli("sim", model_file, "--inputs", tmp_path / "x.npy", "--outputs",
                          out, "--design", design, "--simulator", "verilator",
                          "--build-dir", sim_build_dir)
    assert code == 0, stdout
    assert "5 / 5" in stdout
    assert np.array_equal(np.load(out), golden.run(model, x))
    assert sorted(p.name for p in out.parent.iterdir()) == ["y.npy"]


@pytest.mark.parametrize("command", ["compress", "sim"])
def test_output_below_a_file_is_refused_before_any_work(cli, tmp_path, command):
    """An output path below a regular file is named in one line before the training or
    simulation starts: nothing is trained (the float-model cache stays empty)."""
    (tmp_path / "afile").write_text("not a folder")
    cache = tmp_path / "cache"
    cache.mkdir()
    target = tmp_path / "afile" / "out.npy"
    if command == "compress":
        argv = ["compress", "-o", target, "--cache-dir", cache]
    else:
        argv = ["sim", tmp_path / "model.npz", "--inputs", tmp_path / "x.npy",
                "--outputs", target]
    code, _, err = cli(*argv)
    assert code == 2
    assert err.strip() == (f"error: {'-o' if command == 'compress' else '--outputs'} "
                           f"{target}: {tmp_path / 'afile'} is a file, not a folder; choose "
                           f"another path")
    assert list(cache.iterdir()) == []


@pytest.mark.verilator
def test_sim_writes_the_waveform_of_the_first_mismatch(cli, tmp_path, model_file,
                                                       digits_models, digits_data,
                                                       sim_build_dir, monkeypatch):
    """``sim --waves`` (Verilator by default): with a golden model that disagrees on
    input 1, the report names the word and its cycle and where the VCD is; exit 1."""
    model = digits_models["flightnn"]
    x = model.quantize_input(digits_data[2][:3])
    np.save(tmp_path / "x.npy", x)
    real_run = flow.golden.run

    def wrong_golden(*args, **kwargs):
        out = real_run(*args, **kwargs).copy()
        out[1, 4] -= 1
        return out

    monkeypatch.setattr(flow.golden, "run", wrong_golden)
    waves = tmp_path / "bad.vcd"
    code, stdout, _ = cli("sim", model_file, "--inputs", tmp_path / "x.npy", "--lanes", "2",
                          "--taps", "4", "--build-dir", sim_build_dir, "--waves", waves)
    assert code == 1, stdout
    line = next(ln for ln in stdout.splitlines() if ln.startswith("mismatch: "))
    assert "input 1: final layer" in line and "output 4:" in line
    assert "left the accelerator at cycle" in line and str(waves) in line
    assert waves.stat().st_size > 1000
    assert "(verilator," in stdout


def test_missing_model_file(cli, tmp_path):
    code, _, err = cli("generate", tmp_path / "nope.npz", "-o", tmp_path / "d")
    assert code == 2
    assert "does not exist" in one_line_error(err)
    assert not (tmp_path / "d").exists()


def test_corrupt_model_file(cli, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    code, _, err = cli("generate", bad, "-o", tmp_path / "d")
    assert code == 2
    one_line_error(err)
    assert not (tmp_path / "d").exists()


def test_invalid_lanes(cli, tmp_path, model_file):
    code, _, err = cli("generate", model_file, "-o", tmp_path / "d", "--lanes", "0")
    assert code == 2
    assert "'lanes'" in one_line_error(err)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("bad, words", [
    (np.zeros((2, 1, 7, 8), dtype=np.int64), "shape"),
    (np.full((2, 1, 8, 8), 300, dtype=np.int64), "0..255"),
    (np.zeros((2, 1, 8, 8), dtype=np.float32), "--quantize"),
])
def test_sim_rejects_bad_inputs(cli, tmp_path, model_file, bad, words):
    np.save(tmp_path / "x.npy", bad)
    code, _, err = cli("sim", model_file, "--inputs", tmp_path / "x.npy", "--outputs",
                       tmp_path / "y.npy")
    assert code == 2
    assert words in one_line_error(err)
    assert not (tmp_path / "y.npy").exists()


def test_sim_rejects_a_design_made_for_another_engine(cli, tmp_path, digits_models,
                                                      model_file):
    int8 = tmp_path / "int8.npz"
    save_model(digits_models["int8"], int8)
    design = tmp_path / "design"
    assert cli("generate", int8, "-o", design)[0] == 0
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), dtype=np.int64))
    code, _, err = cli("sim", model_file, "--inputs", tmp_path / "x.npy", "--design", design)
    assert code == 2
    assert "'engine'" in one_line_error(err)


# -- weight pools -------------------------------------------------------------------------

@pytest.mark.icarus
def test_pool_model_generate_and_sim_at_reduced_precision(cli, tmp_path, digits_pool_models,
                                                          digits_data, sim_build_dir):
    """A pool model goes through generate and sim like any other; --bits rewrites the
    program (the manifest records it) and the RTL follows the golden model at it."""
    model = digits_pool_models[16]
    path = tmp_path / "pool.npz"
    save_model(model, path)
    x = model.quantize_input(digits_data[2][:2])
    np.save(tmp_path / "x.npy", x)
    design = tmp_path / "design"
    code, stdout, _ = cli("generate", path, "-o", design, "--bits", "2")
    assert code == 0, stdout
    manifest = json.loads((design / "manifest.json").read_text())
    assert manifest["config"]["engine"] == "pool" and manifest["config"]["taps"] == 8
    assert set(manifest["bits"].values()) == {2}
    assert manifest["memory_map"]["pool"]["used"] == 16
    code, stdout, _ = cli("sim", path, "--inputs", tmp_path / "x.npy", "--outputs",
                          tmp_path / "y.npy", "--design", design, "--bits", "2",
                          "--simulator", "icarus", "--build-dir", sim_build_dir)
    assert code == 0, stdout
    assert "2 / 2" in stdout
    assert np.array_equal(np.load(tmp_path / "y.npy"), golden.run(model, x, bits=2))
    # A precision the activations do not have is refused, naming the field.
    code, _, err = cli("sim", path, "--inputs", tmp_path / "x.npy", "--design", design,
                       "--bits", "9")
    assert code == 2 and "'bits'" in one_line_error(err)


@pytest.mark.verilator
def test_pool_demo_prints_the_table(cli, tmp_path, digits_cache, sim_build_dir):
    """``demo --scheme pool`` on one pool size and two precisions: rows for int8 and
    both precisions, every RTL run equal to the golden model, fewer cycles at fewer
    bits."""
    out = tmp_path / "demo.json"
    code, stdout, err = cli("demo", "--scheme", "pool", "--pool-sizes", "16", "--bits", "8,2",
                            "--rtl-samples", "3", "--cache-dir", digits_cache, "--build-dir",
                            sim_build_dir, "--json", out)
    assert code == 0, err
    rows = json.loads(out.read_text())["rows"]
    assert [(r["scheme"], r["pool_size"], r["bits"]) for r in rows] == [
        ("int8", None, 8), ("pool", 16, 8), ("pool", 16, 2)]
    assert all(r["equal"] == r["n"] for r in rows)
    assert rows[2]["cycles"] < rows[1]["cycles"]
    assert rows[1]["streamed_bpw"] < rows[0]["streamed_bpw"]
    assert "pool" in stdout and "16" in stdout


@pytest.mark.icarus
@pytest.mark.slow
def test_bench_measures_simulation_speed(cli, tmp_path, digits_cache, sim_build_dir):
    """``bench --speed-only``: one row per bench mode, each a bit-exact run whose
    simulated cycles cover every inference's counted cycles and its words; the
    per-cycle bench is the reference of the speed-up."""
    out = tmp_path / "bench"
    code, stdout, err = cli("bench", "--speed-only", "--speed-simulators", "icarus",
                            "--speed-images", "2", "--cache-dir", digits_cache,
                            "--build-dir", sim_build_dir, "-o", out)
    assert code == 0, err
    speed = json.loads((out / "results.json").read_text())["speed"]
    assert [(r["simulator"], r["mode"], r["images"]) for r in speed] == [
        ("icarus", "event", 2), ("icarus", "cycle", 2)]
    words = 64 + 10                       # an 8x8 digit in, ten classes out
    for r in speed:
        assert r["sim_cycles"] >= r["images"] * (r["cycles_per_inference"] + words)
        assert r["cycles_per_s"] == pytest.approx(r["sim_cycles"] / r["wall"])
    assert speed[1]["speedup"] == 1.0
    assert "## Simulation speed" in stdout and not (out / "cycles.png").exists()


@pytest.mark.verilator
def test_bench_soak_writes_its_counts(cli, tmp_path, digits_cache, sim_build_dir):
    """``bench --soak N``: the link soak through serve-sim, its counts in soak.json."""
    out = tmp_path / "bench"
    code, stdout, err = cli("bench", "--soak", "40", "--soak-rate", "0.005", "--cache-dir",
                            digits_cache, "--build-dir", sim_build_dir, "-o", out)
    assert code == 0, err
    report = json.loads((out / "soak.json").read_text())
    assert report["requests"] >= 40 and report["rate"] == 0.005
    assert report["frames_accepted_by_device"] > 0 and sum(report["faults"].values()) > 0
    assert "0 damaged frames accepted" in stdout


def test_bench_soak_needs_a_positive_count(cli, tmp_path):
    code, _, err = cli("bench", "--soak", "-3", "-o", tmp_path / "b")
    assert code == 2 and "--soak -3" in one_line_error(err)
    assert not (tmp_path / "b").exists()


@pytest.mark.verilator
@pytest.mark.slow
def test_demo_runs_the_whole_split_on_verilator(cli, tmp_path, digits_cache, sim_build_dir):
    """``demo`` with its defaults: every scheme's RTL on Verilator over all 360 test
    images, word for word equal to the golden model, cycles equal to the cycle model."""
    out = tmp_path / "demo.json"
    code, stdout, err = cli("demo", "--cache-dir", digits_cache, "--build-dir",
                            sim_build_dir, "--json", out)
    assert code == 0, err
    rows = json.loads(out.read_text())["rows"]
    assert [r["scheme"] for r in rows] == ["flightnn", "lightnn2", "int8"]
    assert all(r["equal"] == r["n"] == 360 for r in rows)
    assert all(r["cycles"] == r["predicted"] for r in rows)
    assert "simulator verilator" in stdout
