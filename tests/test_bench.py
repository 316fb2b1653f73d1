"""The cocotb bench itself (``shiftpool.sim.bench``): its event-driven streams agree
cycle for cycle with the per-cycle bench, it records when each word moved, a hang ends
in a timeout naming the stream, and a mismatch can be rerun with a waveform."""

from __future__ import annotations

import numpy as np
import pytest
from shiftpool.sim import flow
from shiftpool.sim.flow import first_mismatch, simulate
from shiftpool.sim.runner import SimulatorError, run_image
from shiftpool.sw.compile.fit import fit_config
from shiftpool.sw.compile.image import compile_model
from shiftpool.sw.model.randmodel import random_model

SIMULATORS = [pytest.param("verilator", marks=[pytest.mark.verilator, pytest.mark.slow]),
              pytest.param("icarus", marks=[pytest.mark.icarus, pytest.mark.slow])]

#: Cycles from the edge that takes an inference's last input word to the edge that
#: gives its first output word, beyond the RTL's own count: the FSM's OUT_READ cycle
#: and the output word's edge. Output words follow each other every other cycle.
FIRST_OUT_LATENCY = 2
OUT_SPACING = 2


@pytest.fixture(scope="module")
def small_case():
    """A small FLightNN model, its configuration and four inputs (seeded)."""
    rng = np.random.default_rng(7)
    model = random_model(rng, scheme="flightnn", act_bits=5, exp_bits=2,
                         input_shape=(1, 4, 4), convs=(2,), pool=False, dense=(3,))
    config = fit_config(model, lanes=2, taps=4)
    x = rng.integers(0, 1 << 5, size=(4,) + tuple(model.input_shape))
    return model, config, x


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_word_cycles_follow_the_rtl_counter(simulator, small_case, sim_build_dir):
    """Without gaps or back-pressure the first output word leaves exactly the RTL's
    count (plus the fixed output latency) after the last input word, the others every
    other cycle; the simulated cycles cover every inference."""
    model, config, x = small_case
    result = simulate(model, x, config, simulator=simulator, build_dir=sim_build_dir)
    assert first_mismatch(model, x, result) is None and result.cycles_match
    run = result.run
    assert np.array_equal(run.out_cycles[:, 0] - run.in_cycles,
                          run.cycles + FIRST_OUT_LATENCY)
    assert (np.diff(run.out_cycles, axis=1) == OUT_SPACING).all()
    assert (np.diff(run.in_cycles) > 0).all()
    # sim_cycles runs from before the first input word to after the last output word.
    words = x[0].size
    assert run.sim_cycles >= run.out_cycles[-1, -1] - run.in_cycles[0] + words
    assert run.wall > 0 and run.cpu > 0


@pytest.mark.icarus
@pytest.mark.slow
@pytest.mark.parametrize("gap", [0.0, 0.4])
def test_event_bench_agrees_with_the_per_cycle_bench(gap, small_case, sim_build_dir):
    """The event-driven bench and the first, per-cycle one give the same outputs and
    counts; without gaps, every word moves at the same cycle in both. With gaps and
    back-pressure both are still bit-exact, and the stalls show in the word cycles."""
    model, config, x = small_case
    runs = {mode: simulate(model, x, config, simulator="icarus", build_dir=sim_build_dir,
                           seed=5, idle_gap=gap, back_pressure=gap, bench_mode=mode)
            for mode in ("event", "cycle")}
    for mode, result in runs.items():
        assert first_mismatch(model, x, result) is None, mode
        assert result.cycles_match, mode
    event, cycle = runs["event"].run, runs["cycle"].run
    assert np.array_equal(event.outputs, cycle.outputs)
    if gap == 0:
        assert np.array_equal(event.in_cycles, cycle.in_cycles)
        assert np.array_equal(event.out_cycles, cycle.out_cycles)
        assert event.sim_cycles == cycle.sim_cycles
    else:
        for run in (event, cycle):
            latency = run.out_cycles[:, 0] - run.in_cycles - run.cycles
            spacing = np.diff(run.out_cycles, axis=1)
            assert (latency >= FIRST_OUT_LATENCY).all() and (spacing >= OUT_SPACING).all()
            assert (latency > FIRST_OUT_LATENCY).any() or (spacing > OUT_SPACING).any()


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_a_hang_is_a_timeout_naming_the_stream(simulator, small_case, sim_build_dir):
    """A cycle limit shorter than an inference: the output stream times out, and the
    error says which stream and how far it got."""
    model, config, x = small_case
    image = compile_model(model, config)
    with pytest.raises(SimulatorError, match=r"out: only 0 of \d+ outputs after 20 cycles"):
        run_image(image, x[:1], simulator=simulator, build_dir=sim_build_dir,
                  cycle_limit=20)


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_a_mismatch_is_rerun_with_a_waveform(simulator, small_case, sim_build_dir,
                                             tmp_path, monkeypatch):
    """A golden model that disagrees on input 2, word 1: the report names the word,
    the cycle it left at, and the waveform of input 2 run alone (VCD from Verilator,
    FST from Icarus)."""
    model, config, x = small_case
    real_run = flow.golden.run

    def wrong_golden(*args, **kwargs):
        out = real_run(*args, **kwargs).copy()
        out[2, 1] += 1
        return out

    monkeypatch.setattr(flow.golden, "run", wrong_golden)
    asked = tmp_path / "waves" / "first.wave"
    result = simulate(model, x, config, simulator=simulator, build_dir=sim_build_dir,
                      waves=asked)
    waves = asked.with_suffix(".vcd" if simulator == "verilator" else ".fst")
    assert result.waves == waves
    assert result.first_difference() == (2, 1)
    report = first_mismatch(model, x, result)
    assert f"left the accelerator at cycle {result.out_cycles[2, 1]}" in report
    assert f"waveform of input 2 alone: {waves}" in report
    # Alone, input 2 runs where input 0 ran in the full run (the same load before it).
    assert result.waves_cycle == result.out_cycles[0, 1]
    assert result.waves_ns == result.waves_cycle * 10
    data = waves.read_bytes()
    assert len(data) > 1000
    if simulator == "verilator":
        text = data.decode()
        assert "$enddefinitions" in text and " out__valid " in text
    else:
        assert data[0] == 0                         # an FST file opens with its header


@pytest.mark.icarus
@pytest.mark.slow
def test_bench_measures_every_registered_scheme(digits_cache, digits_data, sim_build_dir):
    """``shiftpool bench`` knows the schemes from the registry: every one with an engine
    is measured bit-exact on the RTL, each run-time precision of the pool engine too,
    and a scheme with no form for the digits CNN (RBNN trains MLPs) is listed as not
    measured, with the reason."""
    from shiftpool.sw.train.digits import digits_float_model

    from shiftpool.bench import bench_schemes, run_bench

    float_model = digits_float_model(cache_dir=digits_cache, progress=False)
    rows, skipped = run_bench(float_model, digits_data, [(1, 8)], simulator="icarus",
                              samples=1, build_dir=sim_build_dir, progress=lambda _: None,
                              compress_options={"epochs": 0})
    measured = {r.scheme for r in rows}
    for scheme in bench_schemes():
        names = ({f"{scheme.name} {b}b" for b in scheme.run_bits} if scheme.run_bits
                 else {scheme.name})
        assert names <= measured or any(line.startswith(f"{scheme.name}: not measured")
                                        for line in skipped), (scheme.name, skipped)
    assert any(line.startswith("rbnn: not measured") and "MLP" in line for line in skipped)
    assert {"int8", "flightnn", "lightnn2", "mlg", "pool 8b", "pool 3b"} <= measured
    assert all(r.rtl_equal == r.rtl_inputs == 1 for r in rows)
    (base,) = [r for r in rows if r.scheme == "int8"]
    assert base.speedup_vs_int8 == 1.0
    # The precision is chosen at run time: fewer bit planes, fewer cycles, same weights.
    pool = {int(r.scheme.split()[1][:-1]): r for r in rows if r.engine == "pool"}
    assert pool[3].cycles < pool[8].cycles and pool[3].image_bits == pool[8].image_bits


@pytest.mark.icarus
@pytest.mark.slow
def test_the_bench_fails_on_its_own_when_the_rtl_disagrees(small_case, sim_build_dir,
                                                            tmp_path):
    """The cocotb bench carries its own scoreboard: given the golden outputs and the
    cycle model's count, it checks every inference, and a cocotb run that disagrees
    fails by itself (not only when the runner compares afterwards). ``run_image``
    still returns such a run, naming what differed."""
    import json

    from shiftpool.sim.runner import SimulatorError, build, make_job, run_cocotb, toplevel_of
    from shiftpool.sw.compile.cycles import inference_cycles
    from shiftpool.sw.schemes import golden

    model, config, x = small_case
    image = compile_model(model, config)
    want = golden.run(model, x)
    cycles = inference_cycles(image)
    good = run_image(image, x, simulator="icarus", build_dir=sim_build_dir, seed=3,
                     expected=want, expected_cycles=cycles)
    assert good.scoreboard == {"checked": len(x), "failed_inputs": 0, "failures": []}

    wrong = want.copy()
    wrong[1, 2] += 5
    bad = run_image(image, x, simulator="icarus", build_dir=sim_build_dir, seed=3,
                    expected=wrong, expected_cycles=cycles + 1)
    assert bad.scoreboard["failed_inputs"] == len(x)
    assert f"input 1: output 2: RTL {want[1, 2]} != golden {wrong[1, 2]} (1 of 3 words " \
        "differ)" in bad.scoreboard["failures"]
    assert f"input 0: {cycles} cycles, the cycle model says {cycles + 1}" in \
        bad.scoreboard["failures"]
    np.testing.assert_array_equal(bad.outputs, want)     # the results are all there

    # The same job run by cocotb alone: the test fails, by the scoreboard's verdict.
    results = tmp_path / "results.json"
    job = make_job(image, x, results, seed=3, expected=wrong)
    (tmp_path / "job.json").write_text(json.dumps(job))
    where = build(config, "icarus", sim_build_dir)
    with pytest.raises(SimulatorError, match="scoreboard: 1 of 4 inferences disagree"):
        run_cocotb("icarus", "icarus simulation", test_module="shiftpool.sim.bench",
                   toplevel=toplevel_of("harness"), build_dir=where, test_dir=tmp_path,
                   env={"SHIFTPOOL_JOB": str(tmp_path / "job.json")}, results=results)
    assert results.exists()
