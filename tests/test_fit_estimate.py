"""The ``--fit`` pre-filter (``boards/fit_estimate.py``): the memory verdict against
the memory estimate, the logic verdict's arithmetic on a reference report, and an
engine's cost extrapolated over lanes against the engine synthesized at that size."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from shiftpool.boards.fit_estimate import EngineCost, engine_cost, logic_verdict, memory_verdict
from shiftpool.boards.registry import get_board
from shiftpool.boards.units import demo_sized_config


def _reference(logic_used: int, dsp_used: int) -> dict:
    """A placed-and-routed reference's report, as much of it as the verdict reads
    (the iCE40UP5K's logic cells and DSPs)."""
    return {"lanes": 1, "taps": 1, "resources": {
        "logic": {"used": logic_used, "available": 5280, "bel": "ICESTORM_LC"},
        "dsp": {"used": dsp_used, "available": 8, "bel": "ICESTORM_DSP"}}}


def test_logic_verdict_adds_the_engines_difference_to_the_reference():
    ref = _reference(5000, 1)
    small = EngineCost(logic=100, dsp=1)
    # 5000 + (380 - 100) = 5280 cells: exactly full fits
    assert logic_verdict(ref, small, EngineCost(logic=380, dsp=1)) is None
    why = logic_verdict(ref, small, EngineCost(logic=381, dsp=1))
    assert why is not None and "about 5281 logic cells (ICESTORM_LC), 5280 available" in why
    assert "1x1 placed and routed" in why and "DSP" not in why
    # 1 + (9 - 1) = 9 DSPs of 8
    why = logic_verdict(ref, small, EngineCost(logic=100, dsp=9))
    assert why is not None and "about 9 DSP blocks (ICESTORM_DSP), 8 available" in why
    assert "logic cells" not in why


def test_memory_verdict_names_the_memory_that_is_missing():
    board = get_board("icebreaker")
    assert memory_verdict(board, demo_sized_config(2, 2, "shiftadd")) is None
    # 16 lanes x 16 taps of 5-bit codes: 1280-bit weight rows, 80 SPRAMs side by side,
    # or 80 x 2 EBR for their 257 rows: reported where it misses less, in block RAM
    why = memory_verdict(board, demo_sized_config(16, 16, "shiftadd"))
    assert why is not None and why.startswith("memory estimate: does not fit iCE40UP5K")
    assert "EBR needed, 30 on the device" in why
    assert "largest: weights: 1280-bit x 257 = 160 EBR" in why


@pytest.mark.synth
@pytest.mark.parametrize("engine", ["shiftadd", "int8"])
def test_engine_cost_over_lanes_matches_the_engine_synthesized(engine, tmp_path):
    """An engine's logic and DSPs at 4 lanes, extrapolated from 1 and 2 lanes, within
    5% (logic) and exactly (DSPs, one per int8 multiply) of yosys' count of the
    4-lane engine; a second call reads the cache."""
    from shiftpool.boards.fit_estimate import _engine_rtlil, _synthesize

    board = get_board("icebreaker")
    config = demo_sized_config(4, 1, engine)
    cache = tmp_path / "engines.json"
    guess = engine_cost(board, config, cache)
    real = _synthesize(board, _engine_rtlil(config))
    assert real.logic > 0
    assert abs(guess.logic - real.logic) <= 0.05 * real.logic, (guess, real)
    assert guess.dsp == real.dsp == (4 if engine == "int8" else 0)
    lines = []
    # another candidate's depths, the same engine
    other = dataclasses.replace(config, act_depth=2 * config.act_depth)
    assert engine_cost(board, other, cache, lines.append) == guess
    assert lines == []          # nothing synthesized again


def test_fit_flow_drops_on_estimates_and_builds_the_rest_largest_first(tmp_path, monkeypatch):
    """``fit_build`` with a stand-in for the build (logic cells grow with lanes x taps)
    and for the estimates: memory drops 4x4 without a build, the smallest (1x1) is
    built first as the reference, the logic estimate drops 4x2, 2x2 is built and
    misses the device, 1x2 fits and is chosen; a second run builds nothing."""
    import shiftpool.boards.build as build_module
    import shiftpool.boards.fit_estimate as estimate
    from shiftpool.boards.board import BoardError
    from shiftpool.boards.fit import fit_build
    from shiftpool.sw.model.randmodel import random_model

    model = random_model(np.random.default_rng(5), scheme="flightnn", act_bits=4,
                         exp_bits=2, input_shape=(1, 4, 4), convs=(2,), pool=False,
                         dense=(3,))
    built = []

    def fake_build(model, board, where, *, lanes, taps, **kwargs):
        built.append((lanes, taps))
        logic = 4000 + 400 * lanes * taps
        if logic > 5280:
            raise BoardError(f"the design does not fit the iCE40UP5K of icebreaker: logic "
                             f"cells (ICESTORM_LC) {logic} used, 5280 available")
        report = {"lanes": lanes, "taps": taps, "bitstream": None, "resources": {
            "logic": {"used": logic, "available": 5280, "bel": "ICESTORM_LC"},
            "dsp": {"used": 0, "available": 8, "bel": "ICESTORM_DSP"}}}
        (where / "build").mkdir(parents=True, exist_ok=True)
        return report

    monkeypatch.setattr(build_module, "build", fake_build)
    monkeypatch.setattr(estimate, "memory_verdict", lambda board, config:
                        "memory estimate: too big" if config.lanes * config.taps > 8 else None)
    # the engine estimate: 200 cells per lane x tap (below the fake build's 400)
    monkeypatch.setattr(estimate, "engine_cost", lambda board, config, path, say=None:
                        EngineCost(200 * config.lanes * config.taps, 0))
    sizes = [(4, 4), (4, 2), (2, 2), (1, 2), (1, 1)]
    report = fit_build(model, "icebreaker", tmp_path, sizes=sizes, report_only=True)
    assert built == [(1, 1), (2, 2), (1, 2)]
    assert (report["lanes"], report["taps"]) == (1, 2) == tuple(report["fit"]["chosen"])
    tried = {(t["lanes"], t["taps"]): t for t in report["fit"]["tried"]}
    assert tried[(4, 4)]["estimated"] and tried[(4, 4)]["why"] == "memory estimate: too big"
    # 4400 (1x1) + 200 * (8 - 1) = 5800 > 5280; 2x2: 5000, built
    assert tried[(4, 2)]["estimated"] and "about 5800 logic cells" in tried[(4, 2)]["why"]
    assert not tried[(2, 2)]["fits"] and "5600 used" in tried[(2, 2)]["why"]
    assert tried[(1, 2)]["fits"] and tried[(1, 1)]["fits"]
    built.clear()
    again = fit_build(model, "icebreaker", tmp_path, sizes=sizes, report_only=True)
    assert built == [] and again["fit"]["chosen"] == [1, 2]


def test_fit_where_no_memory_fits_names_the_smallest(tmp_path, monkeypatch):
    """Every candidate dropped on the memory estimate: one line naming the smallest
    (the nearest to fitting), and nothing built."""
    import shiftpool.boards.build as build_module
    import shiftpool.boards.fit_estimate as estimate
    from shiftpool.boards.board import BoardError
    from shiftpool.boards.fit import fit_build
    from shiftpool.sw.model.randmodel import random_model

    model = random_model(np.random.default_rng(5), scheme="flightnn", act_bits=4,
                         exp_bits=2, input_shape=(1, 4, 4), convs=(2,), pool=False,
                         dense=(3,))
    monkeypatch.setattr(build_module, "build", lambda *a, **k: pytest.fail("built"))
    monkeypatch.setattr(estimate, "memory_verdict", lambda board, config:
                        f"memory estimate: {config.lanes * config.taps} EBR missing")
    with pytest.raises(BoardError) as info:
        fit_build(model, "icebreaker", tmp_path, sizes=[(2, 2), (1, 2)], report_only=True)
    assert str(info.value) == ("no engine of 2x2, 1x2 fits icebreaker; the smallest, 1x2: "
                               "memory estimate: 2 EBR missing")
