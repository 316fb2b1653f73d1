"""``shiftpool explore``: every variant on every engine size whose memories fit each
board, the Pareto front, and what it writes."""

from __future__ import annotations

import json

import pytest
from shiftpool.boards import registry
from shiftpool.boards.memory_fit import board_memory_fit
from shiftpool.boards.registry import get_board
from shiftpool.sw.compile.cycles import inference_cycles
from shiftpool.sw.compile.fit import fit_config
from shiftpool.sw.compile.image import compile_model
from shiftpool.sw.schemes.compress import compress

from shiftpool.explore import explore, pareto, write_results

SIZES = ((2, 4), (8, 8))
BOARDS = ("icebreaker", "ulx3s-85f")


@pytest.fixture(scope="module")
def explored(digits_float, digits_data):
    return explore(digits_float, digits_data, BOARDS, sizes=SIZES, epochs=0,
                   step=lambda _: None)


def test_every_variant_on_every_board(explored):
    variants = {p.variant for p in explored}
    assert {"int8", "lightnn2", "flightnn k1=0.5", "flightnn k1=0.9", "pool S=16 3b",
            "pool S=64 8b", "mlg bc=4", "mlg bc=8"} <= variants
    for board in BOARDS:
        assert {p.variant for p in explored if p.board == board} == variants
    # The digits CNN is not an MLP: no RBNN variant.
    assert not any(p.scheme == "rbnn" for p in explored)
    # MLG runs on the in-situ engine where its memories fit (the ULX3S); on the
    # iCEBreaker no size does (the memory estimate says what is missing).
    mlg = [p for p in explored if p.scheme == "mlg"]
    assert mlg and all(0 < p.bits_per_weight < 8 for p in mlg)
    assert any(p.runs for p in mlg if p.board == "ulx3s-85f")
    ice = [p for p in mlg if p.board == "icebreaker"]
    assert ice and all(not p.runs and "EBR" in p.memory for p in ice)


def test_points_are_the_fit_and_the_cycle_model(explored, digits_float, digits_data):
    """Each running point is a size whose memories fit (the estimate), with the cycle
    model's cycles and the board's build clock; the sizes that do not fit are absent."""
    x_train, y_train = digits_data[:2]
    qm = compress(digits_float, "int8", x_train=x_train, y_train=y_train, epochs=0,
                  progress=False)
    for board in BOARDS:
        mine = {(p.lanes, p.taps): p for p in explored
                if p.board == board and p.variant == "int8"}
        for lanes, taps in SIZES:
            config = fit_config(qm, lanes=lanes, taps=taps)
            fit = board_memory_fit(board, config)
            fits = fit.fits
            assert ((lanes, taps) in mine) == fits, (board, lanes, taps)
            if fits:
                p = mine[(lanes, taps)]
                assert p.cycles == inference_cycles(compile_model(qm, config))
                assert p.inferences_per_s == get_board(board).clock_hz / p.cycles
                assert (p.block_ram, p.spram) == (fit.bram_used, fit.spram_used)
    assert (8, 8) not in {(p.lanes, p.taps) for p in explored if p.board == "icebreaker"}


def test_pareto_front_is_the_non_dominated_set(explored):
    front = pareto(explored)
    assert front
    running = [p for p in explored if p.runs]

    def beats(q, p):
        return (q.accuracy >= p.accuracy and q.inferences_per_s >= p.inferences_per_s
                and q.bits_per_weight <= p.bits_per_weight
                and (q.accuracy > p.accuracy or q.inferences_per_s > p.inferences_per_s
                     or q.bits_per_weight < p.bits_per_weight))

    for p in running:
        dominated = any(beats(q, p) for q in running if q.board == p.board)
        assert (p in front) != dominated, p


def test_results_are_written(explored, tmp_path):
    path = write_results(explored, tmp_path / "out", "shiftpool explore (test)")
    text = path.read_text()
    assert "| board | variant | engine |" in text and "mlg bc=4" in text
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(data["points"]) == len(explored) and len(data["pareto"]) == len(pareto(explored))
    for board in BOARDS:
        assert (tmp_path / "out" / f"pareto-{board}.png").stat().st_size > 1000


def test_cli_refuses_an_unknown_board(capsys):
    from shiftpool.cli import main

    assert main(["explore", "--boards", "icebreaker,nope"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --boards: 'nope' is not a board; choose from ")
    assert all(name in line for name in registry.BOARDS), line
