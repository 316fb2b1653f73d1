"""Lay one MLG layer out for the in-situ engine's weight generator.

The generator (``hw/engines/generator.py``) reads four stores (``hw/generator_layout``:
``v``, ``u``, ``b``, ``w1``) and takes one request per weight row; this module writes a
layer's rows into the stores and makes its requests, in the order the controller
consumes weight rows (lane group by lane group, step by step). Weight row ``(g, s)``
holds ``W[g*lanes + l, ci_j, k_j]`` at lane ``l``, tap ``j``, where :func:`step_inputs`
gives each tap's channel and kernel position (zero beyond ``Co`` and the fan-in), ``W``
being what ``sw/model/file.mlg_weight`` generates.
``docs/arithmetic.md`` section 14.4 is the contract.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ...hw.config import KERNEL_TAPS, AcceleratorConfig, ConfigError
from ...hw.generator_layout import (
    STORES,
    request_fields,
    row_cycles,
    store_depths,
    store_layouts,
)
from ...hw.program import pack

__all__ = ["MlgPlacement", "generated_bits", "generator_cycles", "layer_requests", "pack_requests",
           "pack_store_row", "place_layer", "step_inputs"]


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
    grouped: bool       # steps read a grouped map (channel group G at kernel position k)
    bc: int             # level-1 rows W1[c]: the level-2 basis size, or Co without level 2
    co: int
    ci: int
    kk: int
    steps: int          # weight rows per lane group
    bases: dict         # store name -> first row of the layer

    @property
    def u_rows(self) -> int:
        """``u`` rows per basis: one per channel group (grouped) or step (flat)."""
        return self.steps // KERNEL_TAPS if self.grouped else self.steps


def _check_fit(cfg: AcceleratorConfig, index: int, layer, m) -> None:
    for field, q in (("mlg_qb", m.qb), ("mlg_qu", m.qu), ("mlg_qv", m.qv)):
        if q > getattr(cfg, field):
            raise ConfigError(f"config field {field!r} = {getattr(cfg, field)} is too small "
                              f"for the model's {q}-bit values; set it to {q}")
    need = generated_bits(m, layer)
    if need > cfg.mlg_w_width:
        raise ConfigError(f"config field 'mlg_w_bits' = {cfg.mlg_w_width} is too small: layer "
                          f"{index} generates weights of up to {need} signed bits")
    if layer.mlg_b is not None and layer.mlg_b.shape[1] > cfg.mlg_bi:
        raise ConfigError(f"config field 'mlg_bi' = {cfg.mlg_bi} is too small: layer {index} "
                          f"has Bi = {layer.mlg_b.shape[1]}")
    if layer.mlg_v is not None and layer.mlg_v.shape[1] > cfg.mlg_bc:
        raise ConfigError(f"config field 'mlg_bc' = {cfg.mlg_bc} is too small: layer {index} "
                          f"has Bc = {layer.mlg_v.shape[1]}")


def generated_bits(model, layer) -> int:
    """Signed bits of the largest ``|W|`` an mlg ``layer`` of ``model`` can generate, from
    its widths and basis sizes (``docs/arithmetic.md`` §14.4): ``|W1| <= Bi (2**qu - 1)
    (2**qb - 1)`` with level 1 (else ``2**qu - 1``), ``|W| <= Bc (2**qv - 1) |W1|`` with
    level 2 (else ``|W1|``); odd values at the extremes reach it."""
    w1 = (1 << model.qu) - 1
    if layer.mlg_b is not None:
        w1 *= layer.mlg_b.shape[1] * ((1 << model.qb) - 1)
    w = w1 * (layer.mlg_v.shape[1] * ((1 << model.qv) - 1) if layer.mlg_v is not None else 1)
    return w.bit_length() + 1


def step_inputs(cfg: AcceleratorConfig, ci: int, kk: int, grouped: bool) -> list[list]:
    """Per step, each tap's ``(channel, kernel position)``, None past the fan-in: grouped
    step ``s = G*9 + k`` reads channels ``G*taps + j`` at ``k``; flat step ``s`` the
    flattened inputs ``s*taps + j = c*kk + k`` (the compiler's step order,
    ``sw/compile/image.py``)."""
    out = []
    if grouped:
        for g in range(-(-ci // cfg.taps)):
            for k in range(KERNEL_TAPS):
                out.append([(g * cfg.taps + j, k) if g * cfg.taps + j < ci else None
                            for j in range(cfg.taps)])
    else:
        for s in range(-(-ci * kk // cfg.taps)):
            out.append([divmod(s * cfg.taps + j, kk) if s * cfg.taps + j < ci * kk else None
                        for j in range(cfg.taps)])
    return out


def place_layer(cfg: AcceleratorConfig, model, index: int, stores: dict,
                grouped: bool | None = None) -> MlgPlacement:
    """Append layer ``index``'s bases of the mlg ``model`` to ``stores`` (store name ->
    list of rows); ConfigError naming the config field if a width, a basis size or a
    store depth is too small. ``grouped``: whether the layer's steps read a grouped map
    (``None``: a conv3x3 layer's do, a dense layer's do not)."""
    layer = model.layers[index]
    _check_fit(cfg, index, layer, model)
    layouts = store_layouts(cfg)
    conv = layer.kind == "conv3x3"
    grouped = conv if grouped is None else bool(grouped and conv)
    co = layer.out_shape[0]
    ci = layer.in_shape[0] if conv else int(np.prod(layer.in_shape))
    kk = KERNEL_TAPS if conv else 1
    inputs = step_inputs(cfg, ci, kk, grouped)
    steps = len(inputs)
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
        u = np.asarray(layer.mlg_u, dtype=np.int64)
        # One u row per channel group (grouped: its 9 steps share the channels) or step.
        rows = inputs[::KERNEL_TAPS] if grouped else inputs
        for c in range(bc):
            for taps in rows:
                row = np.zeros((cfg.taps, cfg.mlg_bi), dtype=np.int64)
                for j, tap in enumerate(taps):
                    if tap is not None:
                        row[j, :bi] = u[c, tap[0]]
                stores["u"].append(pack_store_row(row.ravel(), layouts["u"][1]))
            b = np.zeros((cfg.mlg_bi, KERNEL_TAPS), dtype=np.int64)
            b[:bi] = layer.mlg_b[c]
            stores["b"].append(pack_store_row(b.ravel(), layouts["b"][1]))
    else:
        w1 = np.asarray(layer.mlg_w1, dtype=np.int64).reshape(bc, ci, kk)
        for c in range(bc):
            for taps in inputs:
                stores["w1"].append(pack_store_row(
                    [0 if tap is None else w1[c, tap[0], tap[1]] for tap in taps],
                    layouts["w1"][1]))
    depths = store_depths(cfg)
    for name in STORES:
        if len(stores[name]) > depths[name]:
            raise ConfigError(f"config field 'mlg_{name}_depth' = {depths[name]} is too "
                              f"small: the {name!r} store needs {len(stores[name])} rows "
                              f"(layer {index})")
    return MlgPlacement(level1=level1, level2=level2, grouped=grouped, bc=bc, co=co, ci=ci,
                        kk=kk, steps=steps, bases=bases)


def layer_requests(cfg: AcceleratorConfig, p: MlgPlacement) -> list[dict]:
    """The generator requests of a placed layer, one per weight row ``(g, s)`` in
    issue order (``g`` outer); pack each with ``pack(request_fields(cfg), r)``."""
    out = []
    a_base = p.bases["u"] if p.level1 else p.bases["w1"]
    stride = p.u_rows if p.level1 else p.steps
    for g in range(-(-p.co // cfg.lanes)):
        c0 = 0 if p.level2 else g * cfg.lanes
        count = p.bc if p.level2 else min(cfg.lanes, p.co - c0)
        for s in range(p.steps):
            row = (s // KERNEL_TAPS if p.grouped else s) if p.level1 else s
            out.append(dict(
                level1=int(p.level1), level2=int(p.level2), grouped=int(p.grouped),
                count=count, v_addr=p.bases["v"] + g * p.bc if p.level2 else 0,
                a_addr=a_base + c0 * stride + row, a_stride=stride,
                b_addr=p.bases["b"] + c0 if p.level1 else 0,
                k0=s % KERNEL_TAPS if p.grouped else (s * cfg.taps) % KERNEL_TAPS))
    return out


def pack_requests(cfg: AcceleratorConfig, requests: list[dict]) -> list[int]:
    """The requests as the generator's ``i`` payloads."""
    fields = request_fields(cfg)
    return [pack(fields, r) for r in requests]


def generator_cycles(requests: list[dict]) -> int:
    """Cycles the generator takes for ``requests`` when they are offered back to back
    and its rows are taken at once: ``sum(count + GEN_LATENCY)``."""
    return sum(row_cycles(r["count"]) for r in requests)
