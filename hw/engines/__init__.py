"""shiftpool.hw.engines: the compute engines.

Each engine module registers its class (:func:`.common.register_engine`); importing
the module here is what makes an engine known to :func:`.common.make_engine`. Adding an
engine: its module, its line below, its name and config fields in
``hw/config.py``'s ``ENGINE_FIELDS``.
"""

from . import binary, generator, insitu, int8mac, pool, shiftadd

__all__ = ["binary", "generator", "insitu", "int8mac", "pool", "shiftadd"]
