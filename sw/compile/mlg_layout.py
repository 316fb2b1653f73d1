"""Lay one MLG layer out for the in-situ engine's weight generator.

The generator (``hw/engines/generator.py``) reads four stores (``hw/generator_layout``:
``v``, ``u``, ``b``, ``w1``) and takes one request per weight row; this module writes a
layer's rows into the stores and makes its requests, in the order the controller
consumes weight rows (lane group by lane group, step by step). Weight row ``(g, s)``
is ``W[g*lanes + l, s*taps + j]`` (``W`` flattened to ``[Co, Ci*kk]``, zero beyond
``Co`` and the fan-in): what ``sw/model/file.mlg_weight`` generates.
``docs/arithmetic.md`` section 14.4 is the contract.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ...hw.config import KERNEL_TAPS, AcceleratorConfig, ConfigError
from ...hw.generator_layout import STORES, request_fields, row_cycles, store_layouts
from ...hw.program import pack

__all__ = ["MlgPlacement", "generator_cycles", "layer_requests", "mlg_cycle_table", "pack_requests",
           "pack_store_row", "place_layer"]


def pack_store_row(values, width: int) -> int:
    """One store row: ``values`` as signed ``width``-bit fields, LSB first."""
    word = 0
    for i, v in enumerate(values):
        v = int(v)
        if not -(1 << (width - 1)) <= v < 1 << (width - 1):
            raise ValueError(f"value {v} does not fit in {width} signed bits")
        word |= (v & ((1 << width) - 1)) << (i * width)
    return word


@dataclasses.dataclass(frozen=True)
class MlgPlacement:
    """Where one layer's bases lie in the stores, and its shape."""

    level1: bool
    level2: bool
    bc: int             # level-1 rows W1[c]: the level-2 basis size, or Co without level 2
    co: int
    ci: int
    kk: int
    steps: int          # weight rows per lane group
    bases: dict         # store name -> first row of the layer


def _check_fit(cfg: AcceleratorConfig, index: int, layer, m) -> None:
    for field, q in (("mlg_qb", m.qb), ("mlg_qu", m.qu), ("mlg_qv", m.qv)):
        if q > getattr(cfg, field):
            raise ConfigError(f"config field {field!r} = {getattr(cfg, field)} is too small "
                              f"for the model's {q}-bit values; set it to {q}")
    if layer.mlg_b is not None and layer.mlg_b.shape[1] > cfg.mlg_bi:
        raise ConfigError(f"config field 'mlg_bi' = {cfg.mlg_bi} is too small: layer {index} "
                          f"has Bi = {layer.mlg_b.shape[1]}")
    if layer.mlg_v is not None and layer.mlg_v.shape[1] > cfg.mlg_bc:
        raise ConfigError(f"config field 'mlg_bc' = {cfg.mlg_bc} is too small: layer {index} "
                          f"has Bc = {layer.mlg_v.shape[1]}")


def place_layer(cfg: AcceleratorConfig, model, index: int, stores: dict) -> MlgPlacement:
    """Append layer ``index``'s bases of the mlg ``model`` to ``stores`` (store name ->
    list of rows); ConfigError naming the config field if a width, a basis size or
    ``mlg_depth`` is too small."""
    layer = model.layers[index]
    _check_fit(cfg, index, layer, model)
    layouts = store_layouts(cfg)
    conv = layer.kind == "conv3x3"
    co = layer.out_shape[0]
    ci = layer.in_shape[0] if conv else int(np.prod(layer.in_shape))
    kk = KERNEL_TAPS if conv else 1
    fan_in = ci * kk
    steps = -(-fan_in // cfg.taps)
    level1, level2 = layer.mlg_b is not None, layer.mlg_v is not None
    first = layer.mlg_b if level1 else layer.mlg_w1
    bc = first.shape[0]
    bases = {name: len(stores[name]) for name in STORES}
    if level2:
        v = np.zeros((-(-co // cfg.lanes) * cfg.lanes, bc), dtype=np.int64)
        v[:co] = layer.mlg_v
        for g in range(len(v) // cfg.lanes):
            for c in range(bc):
                stores["v"].append(pack_store_row(v[g * cfg.lanes:(g + 1) * cfg.lanes, c],
                                                  layouts["v"][1]))
    if level1:
        bi = layer.mlg_b.shape[1]
        for c in range(bc):
            for k in range(ci):
                row = np.zeros(cfg.mlg_bi, dtype=np.int64)
                row[:bi] = layer.mlg_u[c, k]
                stores["u"].append(pack_store_row(row, layouts["u"][1]))
            b = np.zeros((cfg.mlg_bi, KERNEL_TAPS), dtype=np.int64)
            b[:bi] = layer.mlg_b[c]
            stores["b"].append(pack_store_row(b.ravel(), layouts["b"][1]))
    else:
        w1 = np.zeros((bc, steps * cfg.taps), dtype=np.int64)
        w1[:, :fan_in] = np.asarray(layer.mlg_w1).reshape(bc, fan_in)
        for c in range(bc):
            for s in range(steps):
                stores["w1"].append(pack_store_row(w1[c, s * cfg.taps:(s + 1) * cfg.taps],
                                                   layouts["w1"][1]))
    for name in STORES:
        if len(stores[name]) > cfg.mlg_depth:
            raise ConfigError(f"config field 'mlg_depth' = {cfg.mlg_depth} is too small: "
                              f"the {name!r} store needs {len(stores[name])} rows "
                              f"(layer {index})")
    return MlgPlacement(level1=level1, level2=level2, bc=bc, co=co, ci=ci, kk=kk,
                        steps=steps, bases=bases)


def layer_requests(cfg: AcceleratorConfig, p: MlgPlacement) -> list[dict]:
    """The generator requests of a placed layer, one per weight row ``(g, s)`` in
    issue order (``g`` outer); pack each with ``pack(request_fields(cfg), r)``."""
    out = []
    for g in range(-(-p.co // cfg.lanes)):
        c0 = 0 if p.level2 else g * cfg.lanes
        count = p.bc if p.level2 else min(cfg.lanes, p.co - c0)
        for s in range(p.steps):
            t0 = s * cfg.taps
            r = dict(level1=int(p.level1), level2=int(p.level2), count=count,
                     v_addr=p.bases["v"] + g * p.bc if p.level2 else 0,
                     taps_valid=min(cfg.taps, p.ci * p.kk - t0))
            if p.level1:
                r.update(a_addr=p.bases["u"] + c0 * p.ci + t0 // KERNEL_TAPS,
                         a_stride=p.ci, b_addr=p.bases["b"] + c0, k0=t0 % KERNEL_TAPS)
            else:
                r.update(a_addr=p.bases["w1"] + c0 * p.steps + s, a_stride=p.steps)
            out.append(r)
    return out


def pack_requests(cfg: AcceleratorConfig, requests: list[dict]) -> list[int]:
    """The requests as the generator's ``i`` payloads."""
    fields = request_fields(cfg)
    return [pack(fields, r) for r in requests]


def generator_cycles(requests: list[dict]) -> int:
    """Cycles the generator takes for ``requests`` when they are offered back to back
    and its rows are taken at once: ``sum(count + GEN_LATENCY)``."""
    return sum(row_cycles(r["count"]) for r in requests)


def mlg_cycle_table(cfg: AcceleratorConfig, model) -> list[dict]:
    """Per MAC layer of the mlg ``model``: its levels, weight rows, the generator's
    cycles to make them once (:func:`generator_cycles`) and the MAC cycles the layer
    takes in the accelerator's schedule (``sw/compile/cycles.py``, one-pass groups),
    which reads every row once per output position."""
    from .cycles import _mac_cycles
    from .image import MacPlan

    stores = {name: [] for name in STORES}
    out = []
    for i, layer in enumerate(model.layers):
        if not layer.is_mac:
            continue
        placed = place_layer(cfg, model, i, stores)
        requests = layer_requests(cfg, placed)
        co = layer.out_shape[0]
        area = int(np.prod(layer.out_shape[1:])) if layer.kind == "conv3x3" else 1
        groups = -(-co // cfg.lanes)
        plan = MacPlan(order=np.arange(co), n1=co, groups1=groups, groups2=0,
                       steps=placed.steps, area=area)
        out.append({"layer": i, "level1": placed.level1, "level2": placed.level2,
                    "rows": len(requests), "generator_cycles": generator_cycles(requests),
                    "mac_cycles": _mac_cycles(plan, co, cfg.lanes)})
    return out
