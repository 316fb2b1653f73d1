"""The pool engine's lookup-table build: loaded pool rows -> the engine's ``build``
stream."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import POOL_GROUP, AcceleratorConfig
from ..engines.pool import pool_build_layout
from ..program import REGIONS, pool_row_fields, struct_layout
from ..signature import load_layout

__all__ = ["TableBuild", "pool_row_layout"]


def pool_row_layout(cfg: AcceleratorConfig):
    """One row of the pool region: the vector's signed values ``v0`` .. ``v7`` and the
    table's narrowing shift."""
    return struct_layout(pool_row_fields(cfg), signed=tuple(f"v{j}" for j in range(POOL_GROUP)))


class TableBuild(wiring.Component):
    """Turns each loaded row of the pool region into a column build of the engine's
    lookup table (writing pool row ``p`` builds column ``p``).

    ``row.ready`` is ``build.ready``: while the engine builds a column, no load row of
    any region is taken (and the accelerator takes no input either, so an inference
    never starts, and counts cycles, behind a build). A row of another region is
    taken at once and not passed on.

    Parameters
    ----------
    config : AcceleratorConfig
        With ``engine == "pool"``.

    Members
    -------
    row : In(stream.Signature(load_layout(config)))
        Load rows, while the accelerator is idle.
    build : Out(stream.Signature(pool_build_layout(config)))
        To the engine: ``index`` the row's address, ``values`` and ``shift`` its fields.
    """

    def __init__(self, config: AcceleratorConfig):
        if not isinstance(config, AcceleratorConfig) or config.engine != "pool":
            raise ValueError(f"TableBuild needs a pool engine's AcceleratorConfig, not "
                             f"{config!r}")
        self.config = config
        super().__init__({
            "row": In(stream.Signature(load_layout(config))),
            "build": Out(stream.Signature(pool_build_layout(config))),
        })

    def elaborate(self, platform):
        m = Module()
        row = Signal(pool_row_layout(self.config))
        build = self.build.payload
        m.d.comb += [
            row.eq(self.row.payload.data),
            self.build.valid.eq(self.row.valid
                                & (self.row.payload.region == REGIONS.index("pool"))),
            build.index.eq(self.row.payload.addr),
            build.shift.eq(row.shift),
            self.row.ready.eq(self.build.ready),
        ]
        m.d.comb += [build.values[j].eq(row[f"v{j}"]) for j in range(POOL_GROUP)]
        return m
