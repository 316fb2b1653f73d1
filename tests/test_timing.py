"""``python -m shiftpool.boards.timing``: one unit placed and routed alone on the
iCE40 UltraPlus, in a register-to-register harness, with its Fmax and critical path."""

from __future__ import annotations

import pytest
from shiftpool.boards.timing import main, unit_timing


@pytest.mark.synth
def test_an_engine_alone_reports_its_fmax_and_critical_path(tmp_path, capsys):
    result = unit_timing("engine", 1, 2, "shiftadd", 48.0, tmp_path)
    assert 10 < result["fmax_mhz"] < 500
    kinds = [kind for kind, _, _ in result["path"]]
    # a register-to-register path: it starts at a flip-flop and ends at one
    assert kinds[0] == "clk-to-q" and kinds[-1] == "setup" and "logic" in kinds
    assert (tmp_path / "report.json").exists() and (tmp_path / "top.json").exists()
    # the command line prints the same figure
    assert main(["--part", "engine", "--lanes", "1", "--taps", "2", "-o",
                 str(tmp_path / "again")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("engine, shiftadd 1x2, alone on the iCE40UP5K: ")
    assert "MHz (target 48)" in out
