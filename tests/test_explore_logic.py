"""``shiftpool explore``'s logic, DSPs and Fmax: a sweep of two small shift-add models
on the iCEBreaker whose reference is the ``ice40_build`` fixture's placed-and-routed
design (the sweep finds it in the ``--fit`` cache, so this module places and routes
nothing itself), checked against that build's report and against the engines
synthesized alone."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from shiftpool.boards.board import BoardError
from shiftpool.boards.fit_estimate import _engine_rtlil, _synthesize
from shiftpool.boards.registry import BOARDS, get_board
from shiftpool.sw.compile.cycles import inference_cycles
from shiftpool.sw.compile.fit import fit_config
from shiftpool.sw.compile.image import compile_model
from shiftpool.sw.model.randmodel import random_model
from shiftpool.sw.schemes.compress import evaluate

from shiftpool.explore import Variant, explore, pareto, sweep, write_results

SIZES = ((1, 2), (4, 2), (8, 2), (20, 1))
#: The fixture's build clock.
CLOCK_MHZ = 16


def _wide_model():
    """A shift-add model with 16-bit activations: its 20 x 1 engine is large enough
    that the estimate exceeds the UP5K's logic cells (its 8 x 2 engine did until the
    shift-add terms became one's complements, about 28% fewer LUT4; 20 lanes of 3-bit
    codes are a 60-bit weight row, within the 4 SPRAMs' 64 bits)."""
    return random_model(np.random.default_rng(5), scheme="flightnn", act_bits=16,
                        exp_bits=1, input_shape=(1, 8, 8), convs=(4,), pool=False,
                        dense=(3,))


def _variant(name, model, seed):
    rng = np.random.default_rng(seed)
    x = rng.random((32, *model.input_shape))
    y = rng.integers(0, 3, size=32)
    return Variant(name, "flightnn", model, evaluate(model, x, y))


@pytest.fixture(scope="module")
def swept(ice40_build, tmp_path_factory):
    """The sweep, its progress lines, the reference's report (the fixture's) and the
    place-and-route folder (with the fixture's ``--fit`` cache where the sweep keeps
    the iCEBreaker's shift-add reference)."""
    _, built, model = ice40_build
    place = tmp_path_factory.mktemp("place")
    (place / "icebreaker-shiftadd" / "fit").mkdir(parents=True)
    shutil.copy2(built / "fit" / "cache.json", place / "icebreaker-shiftadd" / "fit")
    found = [_variant("small", model, 1), _variant("wide", _wide_model(), 2)]
    lines = []
    points = sweep(found, ["icebreaker"], SIZES, step=lines.append, place_dir=place,
                   clock_mhz=CLOCK_MHZ)
    report = json.loads((built / "report.json").read_text())
    return points, lines, report, place, found


def _point(points, variant, size):
    (p,) = [p for p in points if p.variant == variant and (p.lanes, p.taps) == size]
    return p


@pytest.mark.synth
@pytest.mark.slow
def test_the_reference_is_the_placed_build_taken_from_the_cache(swept, ice40_build):
    """The smallest size of the first variant is the reference: its figures are the
    placed-and-routed build's own (the fixture's report), taken from the cache with a
    line saying so and no place and route."""
    points, lines, report, _, found = swept
    p = _point(points, "small", (1, 2))
    res = report["resources"]
    assert p.logic == "placed" and p.fits and not p.why
    assert p.lut4 == res["lut"]["used"]
    assert p.logic_cells == res["logic"]["used"]
    assert p.dsp == res["dsp"]["used"]
    assert p.fmax_mhz == report["clock"]["fmax_mhz"]
    assert p.clock_mhz == report["clock"]["target_mhz"]
    config = fit_config(found[0].model, lanes=1, taps=2)
    cycles = inference_cycles(compile_model(found[0].model, config))
    assert p.cycles == cycles
    assert p.inferences_per_s == pytest.approx(
        min(report["clock"]["target_mhz"], report["clock"]["fmax_mhz"]) * 1e6 / cycles)
    assert any(line.startswith("explore: icebreaker shiftadd reference: small 1x2 sets the "
                               "logic and Fmax of every shiftadd point on icebreaker; placed "
                               "and routed before, its cached result is used")
               for line in lines), lines
    assert any(line.endswith("reference: 1x2 fits (cached)") for line in lines), lines
    assert not any(line.startswith("synthesis (yosys)") or "takes minutes" in line
                   for line in lines), lines
    # every other point is an estimate from the same reference's Fmax
    others = [q for q in points if q is not p]
    assert others and all(q.logic == "estimate" and q.fmax_mhz == p.fmax_mhz for q in others)


@pytest.mark.synth
@pytest.mark.slow
def test_a_larger_engine_is_estimated_larger_by_its_synthesized_difference(swept):
    """4 lanes cost more LUT4 than 1 and 8 more than 4; the estimate's step from 1x2
    to 4x2 is, within 5%, the difference of the two engines synthesized alone at those
    sizes (the sweep extrapolates from 1 and 2 lanes)."""
    points, _, _, _, found = swept
    small = [_point(points, "small", size).lut4 for size in SIZES[:3]]
    assert small[0] < small[1] < small[2]
    board = get_board("icebreaker")
    real = [_synthesize(board, _engine_rtlil(fit_config(found[0].model, lanes=lanes,
                                                        taps=taps))).logic
            for lanes, taps in ((1, 2), (4, 2))]
    assert real[1] > real[0]
    step = small[1] - small[0]
    assert abs(step - (real[1] - real[0])) <= 0.05 * (real[1] - real[0]), (step, real)
    # no DSP in a shift-add engine
    assert {_point(points, "small", size).dsp for size in SIZES[:3]} == {0}


@pytest.mark.synth
@pytest.mark.slow
def test_points_are_marked_by_their_logic_estimate(swept, tmp_path):
    """A point whose estimated logic cells exceed the device is marked, with one
    readable line, and kept off the front; the others fit (the wide model's 20 x 1
    engine exceeded the UP5K until the shift-add terms became one's complements and
    the reference lost its max-pool unit: the exceeding branch itself is
    ``test_logic_verdict_names_the_cells_over_the_device``). The JSON holds the new
    fields of every point."""
    points, _, report, _, _ = swept
    available = report["resources"]["logic"]["available"]
    big = _point(points, "wide", (20, 1))
    assert big.runs and big.block_ram > 0 and "fits" in big.memory
    estimated = [p for p in points if p.logic_cells is not None]
    assert big in estimated
    for p in estimated:
        assert p.fits == (p.logic_cells <= available), p
        if not p.fits:
            assert p.why.startswith("logic estimate (1x2 placed and routed plus the "
                                    "engines' difference): ")
            assert f"about {p.logic_cells} logic cells (ICESTORM_LC), {available} " \
                "available" in p.why
            assert "\n" not in p.why and p not in pareto(points)
    assert any(p.fits for p in estimated)
    path = write_results(points, tmp_path / "out", "explore (test)")
    text = path.read_text()
    assert "| LUT4 | DSP |" in text and "Fmax MHz" in text
    for p in estimated:
        assert (f"- icebreaker {p.variant} {p.lanes}x{p.taps}: {p.why}" in text) == \
            (not p.fits)
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(data["points"]) == len(points)
    for row, p in zip(data["points"], points, strict=True):
        assert {k: row[k] for k in ("lut4", "logic_cells", "dsp", "fmax_mhz", "logic",
                                    "fits", "why")} == \
            {"lut4": p.lut4, "logic_cells": p.logic_cells, "dsp": p.dsp,
             "fmax_mhz": p.fmax_mhz, "logic": p.logic, "fits": p.fits, "why": p.why}
        assert isinstance(row["lut4"], int) and row["logic"] in ("placed", "estimate")
    assert (tmp_path / "out" / "pareto-icebreaker.png").stat().st_size > 1000


@pytest.mark.synth
@pytest.mark.slow
def test_a_second_sweep_synthesizes_and_places_nothing(swept):
    points, _, _, place, found = swept
    lines = []
    again = sweep(found, ["icebreaker"], SIZES, step=lines.append, place_dir=place,
                  clock_mhz=CLOCK_MHZ)
    assert not any(line.startswith(("engine estimate", "synthesis (yosys)"))
                   for line in lines), lines
    assert [(p.lut4, p.fits) for p in again] == [(p.lut4, p.fits) for p in points]


def test_an_unknown_board_is_one_line_naming_it_and_the_boards():
    """Before any work: the float model and data are not looked at."""
    for call in (lambda: explore(None, None, ["icebreaker", "nope"]),
                 lambda: sweep([], ["nope"])):
        with pytest.raises(BoardError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and "'nope'" in message
        assert all(name in message for name in BOARDS), message


@pytest.mark.synth
@pytest.mark.slow
def test_logic_verdict_names_the_cells_over_the_device(swept, tmp_path):
    """The verdict of an engine too large for the UP5K (the wide model's 8 x 8 of
    16-bit activations, synthesized for real) against the fixture's placed reference:
    one line naming the logic cells needed and available; the reference's own engine
    fits."""
    from shiftpool.boards.fit_estimate import engine_cost, logic_verdict

    _, _, report, _, found = swept
    board = get_board("icebreaker")
    cache = tmp_path / "engines.json"
    ref = engine_cost(board, fit_config(found[0].model, lanes=1, taps=2), cache)
    huge = engine_cost(board, fit_config(found[1].model, lanes=8, taps=8), cache)
    assert logic_verdict(report, ref, ref) is None
    why = logic_verdict(report, ref, huge)
    res = report["resources"]["logic"]
    need = res["used"] + huge.logic - ref.logic
    assert need > res["available"]
    assert why == (f"logic estimate (1x2 placed and routed plus the engines' difference): "
                   f"about {need:.0f} logic cells (ICESTORM_LC), {res['available']} available")
