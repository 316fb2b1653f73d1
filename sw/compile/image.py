"""Compile an integer model into the memory images of one accelerator.

The accelerator runs a *layer program*: one descriptor per layer, a tap table that
says where each of a row's ``taps`` activations comes from, weight rows of
``lanes x taps`` codes in exactly the order the controller consumes them, and bias
rows of ``lanes`` biases. ``docs/model-format.md`` ("layer program") describes the
images; this module is their only producer.

FLightNN filters are reordered so that lanes run filters of equal ``k`` together
(one-pass groups first, then two-pass groups) and the next layer's input channels
are permuted to match. The final layer keeps its order (its outputs leave the
chip); each of its groups takes as many passes as its largest ``k``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ...hw.config import POOL_GROUP, AcceleratorConfig, ConfigError
from ...hw.memory_map import region_depths, region_widths
from ...hw.program import (
    KIND_MAC,
    KIND_POOL,
    REGIONS,
    descriptor_fields,
    field_width,
    pack,
    pool_row_fields,
    tap_fields,
)
from ..model.file import QuantModel
from ..schemes import golden, pool_golden

__all__ = ["Image", "MacPlan", "compile_model", "encode_code", "engine_for_model"]

#: Which engine runs which scheme.


def engine_for_model(model: QuantModel) -> str:
    """The engine that runs ``model`` (its scheme's registration says which);
    ConfigError if none does."""
    from ...hw.config import ENGINES
    from ..schemes.registry import engine_for, schemes

    engine = engine_for(model.scheme)
    if engine not in ENGINES:
        built = sorted({s.stored_as for s in schemes().values() if s.engine in ENGINES})
        what = f"its engine {engine!r} is not built yet" if engine else "it has no engine"
        raise ConfigError(f"no engine runs scheme {model.scheme!r} yet ({what}; engines exist "
                          f"for {', '.join(built)}); the golden model runs it")
    if any(layer.slots is not None for layer in model.layers):
        raise ConfigError(f"no accelerator runs scheme {model.scheme!r} yet: the binary engine "
                          f"exists (hw/engines/binary.py) but the compiler and the controller "
                          f"do not lay out its rounds yet; the golden model runs it")
    return engine


@dataclasses.dataclass
class MacPlan:
    """How one MAC layer is laid out over lanes and passes."""

    order: np.ndarray       # compiled channel j computes original filter order[j]
    n1: int                 # channels in one-pass groups
    groups1: int
    groups2: int
    steps: int              # tap rows per pass
    area: int               # output positions

    @property
    def groups(self) -> int:
        return self.groups1 + self.groups2

    @property
    def rows_per_position(self) -> int:
        return self.steps * (self.groups1 + 2 * self.groups2)


@dataclasses.dataclass
class Image:
    """Everything loaded into one accelerator for one model."""

    config: AcceleratorConfig
    model: QuantModel
    regions: dict           # region name -> list of int rows
    plans: list             # per layer: MacPlan or None (pool)
    planes: dict = dataclasses.field(default_factory=dict)  # pool layer -> bit-planes run
    modes: dict = dataclasses.field(default_factory=dict)   # pool layer -> direct/precompute

    @property
    def input_words(self) -> int:
        return int(np.prod(self.model.input_shape))

    @property
    def output_words(self) -> int:
        return self.model.classes

    def region_width(self, name: str) -> int:
        return region_widths(self.config)[name]

    def memory_map(self) -> dict:
        """Per region: code, depth, width and rows used."""
        depth = region_depths(self.config)
        return {
            name: {"code": REGIONS.index(name), "depth": depth[name],
                   "width": self.region_width(name), "used": len(self.regions[name])}
            for name in REGIONS
        }


def encode_code(cfg: AcceleratorConfig, value: int) -> int:
    """Packed engine code of one weight term (shiftadd) or weight (int8, and the pool
    engine's int8 path)."""
    if cfg.engine in ("int8", "pool"):
        return int(value) & 0xFF
    value = int(value)
    if value == 0:
        return 0
    exp = abs(value).bit_length() - 1
    return (1 << (cfg.exp_bits + 1)) | (int(value < 0) << cfg.exp_bits) | exp


def _pack_array(values, width: int) -> int:
    word = 0
    for i, v in enumerate(values):
        word |= (int(v) & ((1 << width) - 1)) << (i * width)
    return word


def _check_fit(model: QuantModel, cfg: AcceleratorConfig) -> None:
    engine = engine_for_model(model)
    if cfg.engine != engine:
        raise ConfigError(f"config field 'engine' = {cfg.engine!r} cannot run a {model.scheme} "
                          f"model; use engine={engine!r}")
    if cfg.act_bits != model.act_bits:
        raise ConfigError(f"config field 'act_bits' = {cfg.act_bits} but the model uses "
                          f"{model.act_bits}-bit activations")
    if engine == "shiftadd" and cfg.exp_bits < model.exp_bits:
        raise ConfigError(f"config field 'exp_bits' = {cfg.exp_bits} is too small for the "
                          f"model's {model.exp_bits}-bit exponents")
    if engine == "pool":
        _check_pool_fit(model, cfg)
    sizes = [int(np.prod(model.input_shape))]
    for d in model.input_shape[1:]:
        if d > cfg.max_dim:
            raise ConfigError(f"input: feature map side {d} exceeds config field 'max_dim' = "
                              f"{cfg.max_dim}")
    for i, layer in enumerate(model.layers):
        sizes.append(int(np.prod(layer.out_shape)))
        for d in layer.out_shape[1:]:
            if d > cfg.max_dim:
                raise ConfigError(f"layer {i}: feature map side {d} exceeds config field "
                                  f"'max_dim' = {cfg.max_dim}")
        if layer.is_mac:
            if layer.fan_in > cfg.max_fan_in:
                raise ConfigError(f"layer {i}: fan-in {layer.fan_in} exceeds config field "
                                  f"'max_fan_in' = {cfg.max_fan_in}")
            if layer.shift > cfg.max_shift:
                raise ConfigError(f"layer {i}: shift {layer.shift} exceeds the largest "
                                  f"shift {cfg.max_shift} the config supports")
            limit = 1 << cfg.sum_log2
            if np.abs(layer.bias).max(initial=0) >= limit:
                raise ConfigError(f"layer {i}: a bias exceeds +-2**{cfg.sum_log2}, the range "
                                  f"the accumulator is sized for; raise 'max_fan_in'")
    if max(sizes[:-1]) > cfg.act_depth:
        raise ConfigError(f"config field 'act_depth' = {cfg.act_depth} is too small: a feature "
                          f"map needs {max(sizes[:-1])} words")
    if model.classes > cfg.out_depth:
        raise ConfigError(f"config field 'out_depth' = {cfg.out_depth} is too small for "
                          f"{model.classes} outputs")
    if len(model.layers) > cfg.program_depth:
        raise ConfigError(f"config field 'program_depth' = {cfg.program_depth} is too small "
                          f"for {len(model.layers)} layers")


def _check_pool_fit(model: QuantModel, cfg: AcceleratorConfig) -> None:
    pool = np.asarray(model.pool)
    if len(pool) > cfg.pool_size:
        raise ConfigError(f"config field 'pool_size' = {cfg.pool_size} is too small for the "
                          f"model's pool of {len(pool)} vectors")
    if model.pool_bits > cfg.pool_bits:
        raise ConfigError(f"config field 'pool_bits' = {cfg.pool_bits} is too small for the "
                          f"model's {model.pool_bits}-bit pool values")
    if model.lut_bits > cfg.lut_bits:
        raise ConfigError(f"config field 'lut_bits' = {cfg.lut_bits} is too small for the "
                          f"model's {model.lut_bits}-bit lookup-table entries")
    if cfg.pool_table != model.pool_table:
        # Exact tables are the same integers in both organisations; narrowed ones are
        # rounded per entry (full) or per half entry (half), so they differ.
        want, shift = pool_golden.model_lut(model)
        got, _ = pool_golden.table(model.pool, model.lut_bits, cfg.pool_table)
        if not np.array_equal(want, got):
            raise ConfigError(
                f"config field 'pool_table' = {cfg.pool_table!r} does not match the model's "
                f"{model.pool_table!r} table, whose entries are narrowed (shift {shift}) and "
                f"rounded for that organisation; set pool_table = {model.pool_table!r} "
                f"(--pool-table {model.pool_table})")
    # Index shapes and ranges against the pool: model.validate().


def _plan(cfg: AcceleratorConfig, model: QuantModel, i: int) -> MacPlan:
    layer = model.layers[i]
    co = layer.out_shape[0]
    area = int(np.prod(layer.out_shape[1:])) if layer.kind == "conv3x3" else 1
    steps = -(-layer.fan_in // cfg.taps)
    last = i == len(model.layers) - 1
    k = np.asarray(layer.k) if layer.k is not None else np.ones(co, dtype=np.int64)
    if last:
        # Outputs leave in their original order; a group runs as many passes as the
        # largest k among its filters.
        order = np.arange(co)
        group_k = [k[g * cfg.lanes:(g + 1) * cfg.lanes].max() for g in range(-(-co // cfg.lanes))]
        if 2 in group_k:
            first_two = group_k.index(2)
            n1 = first_two * cfg.lanes
            groups1, groups2 = first_two, len(group_k) - first_two
        else:
            n1, groups1, groups2 = co, len(group_k), 0
    else:
        order = np.argsort(k, kind="stable")
        n1 = int((k == 1).sum())
        groups1, groups2 = -(-n1 // cfg.lanes), -(-(co - n1) // cfg.lanes)
    return MacPlan(order=order, n1=n1, groups1=groups1, groups2=groups2, steps=steps, area=area)


def _terms(layer, order, in_perm):
    """Per-filter term arrays ``[passes, Co, K]`` in compiled order and input order."""
    if layer.terms is not None:
        t = np.asarray(layer.terms, dtype=np.int64)
        vals = np.where(t == 0, 0, np.sign(t) << np.maximum(np.abs(t) - 1, 0))
    else:
        vals = np.asarray(layer.weight, dtype=np.int64)[None]
    vals = vals[:, order]
    if in_perm is not None:
        ci = len(in_perm)
        shp = vals.shape
        vals = vals.reshape(shp[0], shp[1], ci, -1)[:, :, in_perm].reshape(shp)
    return vals.reshape(vals.shape[0], vals.shape[1], -1)


#: The config field that bounds each descriptor field.
_DESCRIPTOR_BOUND = {
    "tap_base": "tap_depth", "steps": "tap_depth", "weight_base": "weight_depth",
    "bias_base": "bias_depth", "plane_lo": "act_bits", "height": "max_dim",
    "width": "max_dim", "in_width": "max_dim",
    "shift": "max_fan_in", "area": "act_depth", "n1_addr": "act_depth",
    "row_skip": "max_dim", "chan_skip": "max_dim", "groups1": "act_depth",
    "groups2": "act_depth", "n1": "act_depth", "channels": "act_depth",
}
_DEPTH_FIELD = {"program": "program_depth", "taps": "tap_depth", "weights": "weight_depth",
                "bias": "bias_depth", "indices": "index_depth", "pool": "pool_size"}


def _check_depths(cfg: AcceleratorConfig, regions: dict) -> None:
    depth = region_depths(cfg)
    for name in REGIONS:
        if len(regions[name]) > depth[name]:
            raise ConfigError(f"config field {_DEPTH_FIELD[name]!r} = {depth[name]} is too "
                              f"small: the model needs {len(regions[name])} {name} rows")


def _pack_descriptor(cfg: AcceleratorConfig, index: int, regions: dict, values: dict) -> int:
    """Pack layer ``index``'s descriptor; a value too wide for its field becomes a
    :class:`ConfigError` naming the config field that bounds it."""
    try:
        return pack(descriptor_fields(cfg), values)
    except ValueError:
        _check_depths(cfg, regions)
        for name, width in descriptor_fields(cfg):
            value = int(values.get(name, 0))
            if not 0 <= value < 1 << width:
                bound = _DESCRIPTOR_BOUND.get(name, name)
                current = getattr(cfg, bound, None)
                raise ConfigError(f"config field {bound!r} = {current} is too small: layer "
                                  f"{index} needs {name} = {value}") from None
        raise


def _tap_row(cfg: AcceleratorConfig, entries) -> int:
    """One tap-table row from ``taps`` entries (dicts; an empty one is an unused tap)."""
    fields = tap_fields(cfg)
    width = field_width(fields)
    row = 0
    for j, entry in enumerate(entries):
        row |= pack(fields, entry) << (j * width)
    return row


def _mac_taps(cfg: AcceleratorConfig, layer, plan: MacPlan, shape: tuple, fan_in: int):
    """Tap rows of an int8/shift-add layer: entry ``t = s*taps + j`` of the dot product
    (input channel major, then ky, kx) reads activation ``pos + offset``."""
    for s in range(plan.steps):
        entries = []
        for j in range(cfg.taps):
            t = s * cfg.taps + j
            if t >= fan_in:
                entries.append({})
            elif layer.kind == "conv3x3":
                c, r = divmod(t, 9)
                dy, dx = r // 3 - 1, r % 3 - 1
                entries.append(dict(offset=c * plan.area + dy * shape[2] + dx, dy=dy, dx=dx,
                                    valid=1))
            else:
                entries.append(dict(offset=t, valid=1))
        yield _tap_row(cfg, entries)


def _lookup_taps(cfg: AcceleratorConfig, layer, plan: MacPlan, shape: tuple):
    """Tap rows of a pool layer: step ``s`` is one group of 8 inputs, conv3x3 ``s = g*9
    + ky*3 + kx`` (channels ``8g .. 8g+7`` at ``(ky, kx)``), dense ``s = g`` (inputs
    ``8g .. 8g+7``); tap ``j`` is the group's input ``j``, the pattern's bit ``j``."""
    for s in range(plan.steps):
        if layer.kind == "conv3x3":
            g, r = divmod(s, 9)
            dy, dx = r // 3 - 1, r % 3 - 1
            yield _tap_row(cfg, [dict(offset=(POOL_GROUP * g + j) * plan.area
                                      + dy * shape[2] + dx, dy=dy, dx=dx, valid=1)
                                 for j in range(POOL_GROUP)])
        else:
            yield _tap_row(cfg, [dict(offset=POOL_GROUP * s + j, valid=1)
                                 for j in range(POOL_GROUP)])


def _pool_rows(cfg: AcceleratorConfig, model: QuantModel) -> list[int]:
    """The pool region: row ``p`` holds pool vector ``p`` and the table's narrowing
    shift (the engine builds its table column ``p``, full or half, from it as the row
    is written)."""
    shift = pool_golden.table(model.pool, model.lut_bits, cfg.pool_table)[1]
    rows = []
    for vector in np.asarray(model.pool, dtype=np.int64):
        values = {f"v{j}": int(v) for j, v in enumerate(vector)}
        rows.append(pack(pool_row_fields(cfg), dict(values, shift=shift)))
    return rows


def compile_model(model: QuantModel, cfg: AcceleratorConfig,
                  bits: int | dict | None = None, mode: str | dict = "direct") -> Image:
    """Lay ``model`` out for ``cfg``; raises :class:`ConfigError` naming what does not fit.

    ``bits`` is a pool model's run-time precision (as :func:`shiftpool.sw.schemes.golden.run`
    takes it): it sets each pool layer's ``plane_lo`` in the program, so changing it
    rewrites the program region only. ``mode`` picks direct or precompute evaluation
    per pool layer (as ``golden.run`` takes it); precompute needs a configuration with
    ``precompute_steps`` covering the layer's steps.
    """
    model.validate()
    _check_fit(model, cfg)
    planes = golden.layer_bits(model, bits)
    modes = golden.layer_modes(model, mode)
    regions = {name: [] for name in REGIONS}
    if cfg.engine == "pool":
        regions["pool"] = _pool_rows(cfg, model)
    plans = []
    in_perm = None          # permutation of the current feature map's channels
    shape = tuple(model.input_shape)
    for i, layer in enumerate(model.layers):
        src = i % 2
        last = i == len(model.layers) - 1
        if layer.kind == "maxpool2":
            c, h, w = shape
            oh, ow = h // 2, w // 2
            regions["program"].append(_pack_descriptor(cfg, i, regions, dict(
                kind=KIND_POOL, src=src, height=oh, width=ow, in_width=w, channels=c,
                row_skip=2 * w - 2 * ow, chan_skip=(h - 2 * oh) * w)))
            plans.append(None)
            shape = tuple(layer.out_shape)
            continue
        plan = _plan(cfg, model, i)
        plans.append(plan)
        co = layer.out_shape[0]
        tap_base = len(regions["taps"])
        bias_base = len(regions["bias"])
        bias = np.asarray(layer.bias, dtype=np.int64)[plan.order]
        if layer.is_pool:
            # Pool layers keep their channel order (no k to sort by), and so do the
            # int8 layers of a pool model.
            regions["taps"].extend(_lookup_taps(cfg, layer, plan, shape))
            row_region = "indices"
            index = np.asarray(layer.index, dtype=np.int64).reshape(co, plan.steps)
        else:
            vals = _terms(layer, plan.order, in_perm)
            fan_in = vals.shape[2]
            regions["taps"].extend(_mac_taps(cfg, layer, plan, shape, fan_in))
            row_region = "weights"
        # Weight rows: group by group, pass by pass, step by step.
        weight_base = len(regions[row_region])
        for g in range(plan.groups):
            one_pass = g < plan.groups1
            first = g * cfg.lanes if one_pass else plan.n1 + (g - plan.groups1) * cfg.lanes
            limit = plan.n1 if one_pass else co
            chans = [first + lane for lane in range(cfg.lanes)]
            regions["bias"].append(_pack_array(
                [bias[ch] if ch < limit else 0 for ch in chans], cfg.acc_width))
            for p in range(1 if one_pass else 2):
                for s in range(plan.steps):
                    if layer.is_pool:
                        regions["indices"].append(_pack_array(
                            [index[ch, s] if ch < limit else 0 for ch in chans],
                            cfg.index_bits))
                        continue
                    codes = []
                    for ch in chans:
                        for j in range(cfg.taps):
                            t = s * cfg.taps + j
                            ok = ch < limit and t < fan_in and p < len(vals)
                            codes.append(encode_code(cfg, vals[p, ch, t]) if ok else 0)
                    regions["weights"].append(_pack_array(codes, cfg.code_width))
        h, w = (shape[1], shape[2]) if layer.kind == "conv3x3" else (1, 1)
        fields = dict(
            kind=KIND_MAC, last=int(last), src=src, shift=int(layer.shift),
            height=h, width=w, area=plan.area, steps=plan.steps, tap_base=tap_base,
            weight_base=weight_base, bias_base=bias_base, groups1=plan.groups1,
            groups2=plan.groups2, n1=plan.n1, channels=co, n1_addr=plan.n1 * plan.area)
        if cfg.engine == "pool":
            fields.update(lookup=int(layer.is_pool),
                          plane_lo=model.act_bits - planes[i] if layer.is_pool else 0)
        if modes.get(i) == "precompute":
            if not cfg.precompute:
                raise ConfigError(f"layer {i}: precompute mode needs a precompute store; set "
                                  f"config field 'precompute_steps' to at least {plan.steps}")
            if plan.steps > cfg.precompute_steps:
                raise ConfigError(f"config field 'precompute_steps' = "
                                  f"{cfg.precompute_steps} is too small: layer {i} in "
                                  f"precompute mode has {plan.steps} steps")
            fields.update(fill_groups=cfg.fill_rows)
        regions["program"].append(_pack_descriptor(cfg, i, regions, fields))
        in_perm = None if last else plan.order
        shape = tuple(layer.out_shape)
    _check_depths(cfg, regions)
    return Image(config=cfg, model=model, regions=regions, plans=plans, planes=planes,
                 modes=modes)
