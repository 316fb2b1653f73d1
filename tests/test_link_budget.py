"""The host link's size in the iCEBreaker configuration: yosys ``synth_ice40 -device u
-dsp -noflatten`` of the link alone (``shiftpool.boards.unit_luts``), for the digits
demo's 2 lanes x 4 taps, both engines. DESIGN.md's budget is 500 LUT4; the link is
not there yet, so that test is an expected failure (strict: it fails once the link
fits, and then the mark goes), and a second test keeps what has been reached."""

from __future__ import annotations

import pytest
from shiftpool.boards.unit_luts import demo_sized_config, link_luts

#: DESIGN.md: the link <= 500 LUT4.
BUDGET = 500
#: Reached so far (1557 measured for shiftadd, 1736 before the byte-wide readback,
#: the reply memory and the reset-less data registers); a change that grows the link
#: past it fails here.
REACHED = 1600


@pytest.fixture(scope="module", params=["shiftadd", "int8"])
def link_size(request):
    rows = link_luts(demo_sized_config(2, 4, request.param))
    assert any(name.endswith("handler") for name in rows), rows    # the hierarchy is kept
    return sum(luts for luts, _ in rows.values()), rows


@pytest.mark.synth
def test_link_does_not_grow(link_size):
    total, rows = link_size
    assert total <= REACHED, rows


@pytest.mark.synth
@pytest.mark.xfail(strict=True, reason="the link is about 1550 LUT4 today (goal of issue 11)")
def test_link_fits_its_budget(link_size):
    total, rows = link_size
    assert total <= BUDGET, rows
