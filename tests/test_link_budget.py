"""The host link's size in the iCEBreaker configuration: yosys ``synth_ice40 -device u
-dsp -noflatten`` of the link alone (``python -m shiftpool.boards.units``), for the digits
demo's 2 lanes x 4 taps, both engines. DESIGN.md's budget is 500 LUT4; the link is
not there yet (about 1090: issue 11), so the test holds what has been reached: a
change that grows the link fails. Lower REACHED as the link shrinks."""

from __future__ import annotations

import pytest
from shiftpool.boards.units import demo_sized_config, link_luts

#: Reached so far (1092 measured at 2 x 4 for both engines; 1557 before the
#: handler's payloads were driven in every state, its counters moved into a block
#: RAM and its rows shifted in; 1736 before the byte-wide readback, the reply memory
#: and the reset-less data registers); a change that grows the link past it fails.
REACHED = 1100


@pytest.fixture(scope="module", params=["shiftadd", "int8"])
def link_size(request):
    rows = link_luts(demo_sized_config(2, 4, request.param))
    assert any(name.endswith("handler") for name in rows), rows    # the hierarchy is kept
    return sum(luts for luts, _ in rows.values()), rows


@pytest.mark.synth
def test_link_does_not_grow(link_size):
    total, rows = link_size
    assert total <= REACHED, rows
