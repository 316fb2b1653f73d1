"""The accelerator's memory map: the load regions' depths and row widths.

The gateware sizes its memories and its ``load`` and ``readback`` ports from these
functions, the compiler checks a model's images against them, IDENTIFY reports them
and the host driver checks them. This module needs no amaranth, so the host side can
import it.
"""

from __future__ import annotations

from .config import AcceleratorConfig
from .generator_layout import STORES, store_depths, store_widths
from .program import (
    PROGRAM_WORD,
    REGIONS,
    addr_width,
    descriptor_words,
    field_width,
    pool_row_fields,
    tap_fields,
)

__all__ = ["REGIONS", "load_addr_width", "load_data_width", "region_depths", "region_width",
           "region_widths"]


def region_widths(cfg: AcceleratorConfig) -> dict[str, int]:
    """Bits in one row of each region (0 for a region the engine does not have)."""
    pool = cfg.engine == "pool"
    mlg = cfg.engine == "insitu"
    widths = store_widths(cfg) if mlg else {}
    return {
        "program": PROGRAM_WORD,
        "taps": field_width(tap_fields(cfg)),
        "weights": 0 if mlg else cfg.lanes * cfg.taps * cfg.code_width,
        "bias": cfg.lanes * cfg.acc_width,
        "indices": cfg.lanes * cfg.index_bits if pool else 0,
        "pool": field_width(pool_row_fields(cfg)) if pool else 0,
        **{f"mlg_{name}": widths.get(name, 0) for name in STORES},
    }


def region_depths(cfg: AcceleratorConfig) -> dict[str, int]:
    """Rows of each region (0 for a region the engine does not have)."""
    pool = cfg.engine == "pool"
    mlg = cfg.engine == "insitu"
    depths = store_depths(cfg) if mlg else {}
    return {"program": cfg.program_depth * descriptor_words(cfg), "taps": cfg.tap_depth,
            # (a pool engine without its int8 path has no weights region)
            "weights": 0 if mlg or (pool and not cfg.int8_path) else cfg.weight_depth,
            "bias": cfg.bias_depth,
            "indices": cfg.index_depth if pool else 0,
            "pool": cfg.pool_size if pool else 0,
            **{f"mlg_{name}": depths.get(name, 0) for name in STORES}}


def region_width(cfg: AcceleratorConfig, region: str) -> int:
    """Bits in one row of ``region``."""
    return region_widths(cfg)[region]


def load_addr_width(cfg: AcceleratorConfig) -> int:
    """Bits of a row address on the ``load`` and ``readback`` ports: of the deepest
    region."""
    return addr_width(max(region_depths(cfg).values()))


def load_data_width(cfg: AcceleratorConfig) -> int:
    """Bits of a row on the ``load`` and ``readback`` ports: of the widest region (a
    narrower region's row is zero-extended)."""
    return max(region_widths(cfg)[name] for name in REGIONS)
