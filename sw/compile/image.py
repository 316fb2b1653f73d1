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

from ...hw.config import AcceleratorConfig, ConfigError
from ...hw.generator_layout import STORES
from ...hw.memory_map import region_depths, region_widths
from ...hw.program import (
    KIND_MAC,
    KIND_POOL,
    REGIONS,
    descriptor_fields,
    descriptor_to_words,
    pack,
    pool_row_fields,
    tap_fields,
    words_to_descriptors,
)
from ..model.file import QuantModel
from ..schemes import golden, pool_golden
from .engine_model import code_offset
from .mlg_layout import place_layer

__all__ = ["Image", "MacPlan", "compile_model", "encode_code", "engine_for_model",
           "map_layout", "map_words", "uses_im2col"]


def uses_im2col(model: QuantModel, taps: int) -> bool:
    """Whether the first layer runs on an im2col input: a conv3x3 layer that is not
    pooled and whose ``9 * C`` dot-product inputs pack into fewer words than its ``C``
    channels do at each of the 9 kernel offsets (``ceil(9C / taps) < 9 *
    ceil(C / taps)``, e.g. one input channel)."""
    first = model.layers[0]
    if first.kind != "conv3x3" or first.is_pool:
        return False
    c = model.input_shape[0]
    return -(-9 * c // taps) < 9 * -(-c // taps)


def map_layout(model: QuantModel, i: int, im2col: bool = False) -> str:
    """How the input map of layer ``i`` is stored in activation words
    (``docs/model-format.md``, "activation words"): ``"flat"`` for a dense layer (the
    CHW-flattened vector, ``taps`` consecutive activations per word), ``"im2col"`` for
    the first layer of an image compiled with ``im2col`` (the ``9 * C`` inputs of each
    position's 3x3 neighbourhood, grouped as channels), else ``"grouped"`` (a word
    holds ``taps`` channels of one position)."""
    if i == 0 and im2col:
        return "im2col"
    return "flat" if model.layers[i].kind == "dense" else "grouped"


def map_words(taps: int, shape: tuple, layout: str) -> int:
    """Activation words of ``taps`` lanes a ``(C, H, W)`` map takes in ``layout``."""
    c, area = shape[0], int(np.prod(shape[1:]))
    if layout == "flat":
        return -(-c * area // taps)
    if layout == "im2col":
        c *= 9
    return -(-c // taps) * area


def input_lanes(taps: int, shape: tuple, layout: str) -> int:
    """Lanes of each input word the host sends (descriptor field ``in_lanes``,
    ``docs/model-format.md`` §2.2): a grouped (or im2col) map of fewer than ``taps``
    channels fills only its channels' lanes; other maps fill every lane."""
    c = shape[0] * (9 if layout == "im2col" else 1)
    return taps if layout == "flat" else min(c, taps)

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
    descriptors: int = 1    # descriptors the layer runs as (an RBNN hidden layer: one per round)

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
    im2col: bool = False    # the first layer reads an im2col input (docs/model-format.md §2.2)

    @property
    def descriptors(self) -> list[int]:
        """The packed layer descriptors of the program region (its rows are their
        words, docs/model-format.md §2.1)."""
        return words_to_descriptors(self.config, self.regions["program"])

    @property
    def input_words(self) -> int:
        """Input values the host sends per inference (:meth:`input_stream`)."""
        shape = tuple(self.model.input_shape)
        layout = map_layout(self.model, 0, self.im2col)
        if layout == "flat":
            return int(np.prod(shape))
        taps = self.config.taps
        return map_words(taps, shape, layout) * input_lanes(taps, shape, layout)

    def input_stream(self, x: np.ndarray) -> np.ndarray:
        """The values the host sends for integer inputs ``x`` (``(N, C, H, W)``):
        ``(N, input_words)``. A flat input map is its CHW-flattened values; a grouped
        (or im2col) one is its activation words in address order, each word's first
        ``in_lanes`` lanes (:func:`input_lanes`), lane 0 first, the lanes past the
        map's channels 0 (docs/model-format.md §2.2)."""
        taps = self.config.taps
        shape = tuple(self.model.input_shape)
        x = np.asarray(x, dtype=np.int64).reshape((-1,) + shape)
        n = len(x)
        layout = map_layout(self.model, 0, self.im2col)
        if layout == "flat":
            return x.reshape(n, -1)
        if layout == "im2col":
            # Channel c*9 + ky*3 + kx at (y, x) is the input at (y + ky - 1, x + kx - 1),
            # 0 outside the image.
            _, h, w = shape
            pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
            x = np.stack([pad[:, :, ky:ky + h, kx:kx + w] for ky in range(3) for kx in range(3)],
                         axis=2).reshape(n, 9 * shape[0], h, w)
            shape = x.shape[1:]
        c, area = shape[0], int(np.prod(shape[1:]))
        lanes = input_lanes(taps, shape, "grouped")
        groups = -(-c // lanes)
        padded = np.zeros((n, groups * lanes, area), dtype=np.int64)
        padded[:, :c] = x.reshape(n, c, area)
        return padded.reshape(n, groups, lanes, area).transpose(0, 1, 3, 2).reshape(n, -1)

    @property
    def output_words(self) -> int:
        return self.model.classes

    def region_width(self, name: str) -> int:
        return region_widths(self.config)[name]

    @property
    def weight_regions(self) -> tuple[str, ...]:
        """The load regions that hold the model's weights in this image: every region
        with rows but the program, the tap rows and the biases (FLightNN and int8:
        ``weights``; pool: also ``indices`` and ``pool``; MLG: the generator's stores)."""
        return tuple(name for name in REGIONS if self.regions.get(name)
                     and name not in ("program", "taps", "bias"))

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


def input_sides(model: QuantModel) -> tuple[int, ...]:
    """The input's feature-map sides that ``max_dim`` must hold: none when the first
    layer is dense (it reads its input as one flat vector)."""
    return () if model.layers[0].kind == "dense" else tuple(model.input_shape[1:])


def _check_fit(model: QuantModel, cfg: AcceleratorConfig, im2col: bool) -> None:
    engine = engine_for_model(model)
    if cfg.engine != engine:
        raise ConfigError(f"config field 'engine' = {cfg.engine!r} cannot run a {model.scheme} "
                          f"model; use engine={engine!r}")
    if cfg.act_bits != model.act_bits:
        raise ConfigError(f"config field 'act_bits' = {cfg.act_bits} but the model uses "
                          f"{model.act_bits}-bit activations")
    if cfg.rounding != model.rounding:
        raise ConfigError(f"config field 'rounding' = {cfg.rounding!r} but the model's "
                          f"requantizer rounds {model.rounding!r}")
    if engine == "shiftadd" and cfg.exp_bits < model.exp_bits:
        raise ConfigError(f"config field 'exp_bits' = {cfg.exp_bits} is too small for the "
                          f"model's {model.exp_bits}-bit exponents")
    if engine == "pool":
        _check_pool_fit(model, cfg)
    pools = [i for i, layer in enumerate(model.layers) if layer.kind == "maxpool2"]
    if pools and not cfg.maxpool:
        raise ConfigError(f"config field 'maxpool' is false (no max-pool unit) but layer "
                          f"{pools[0]} is a max-pool; build with maxpool = true")
    for d in input_sides(model):
        if d > cfg.max_dim:
            raise ConfigError(f"input: feature map side {d} exceeds config field 'max_dim' = "
                              f"{cfg.max_dim}")
    for i, layer in enumerate(model.layers):
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
    need = act_need(model, cfg.taps, im2col)
    if need > cfg.act_depth:
        raise ConfigError(f"config field 'act_depth' = {cfg.act_depth} is too small: a feature "
                          f"map needs {need} activations ({need // cfg.taps} words of "
                          f"{cfg.taps})")
    if model.classes > cfg.out_depth:
        raise ConfigError(f"config field 'out_depth' = {cfg.out_depth} is too small for "
                          f"{model.classes} outputs")
    rows = program_rows(model)
    if rows > cfg.program_depth:
        raise ConfigError(f"config field 'program_depth' = {cfg.program_depth} is too small "
                          f"for {len(model.layers)} layers ({rows} descriptors)")
    if engine == "binary":
        _check_rbnn_fit(model, cfg)


def _check_rbnn_fit(model: QuantModel, cfg: AcceleratorConfig) -> None:
    """The binary engine runs RBNN layers only, with the model's slot width; a layer
    whose rounds extend its inputs reads the padded map of a hidden layer of as many
    rounds and units (docs/model-format.md §2.12)."""
    for i, layer in enumerate(model.layers):
        if not layer.is_mac:
            raise ConfigError(f"layer {i}: the binary engine runs RBNN dense layers only, "
                              f"not {layer.kind}")
        if layer.slots is None:
            raise ConfigError(f"layer {i}: the binary engine runs RBNN layers (storage "
                              f"slots) only; this layer has plain weights")
        if layer.slot_bits != cfg.slot_bits:
            raise ConfigError(f"config field 'slot_bits' = {cfg.slot_bits} but layer {i}'s "
                              f"slots have {layer.slot_bits} bits")
        # One round reads and writes plain maps: a plain binary network of any depth.
        before = model.layers[i - 1] if i else None
        if layer.expand == "inputs" and layer.rounds > 1:
            units = np.shape(layer.slots)[1]
            if before is None or not rbnn_hidden(before) or before.rounds != layer.rounds \
                    or np.shape(before.slots)[0] != units:
                raise ConfigError(f"layer {i}: an RBNN layer whose rounds extend its inputs "
                                  f"must follow an RBNN hidden layer of {layer.rounds} rounds "
                                  f"of {units} units")
        elif before is not None and rbnn_hidden(before) and before.rounds > 1:
            raise ConfigError(f"layer {i}: after an RBNN hidden layer of {before.rounds} "
                              f"rounds comes an RBNN layer whose rounds extend its inputs "
                              f"(expand 'inputs')")
        if rbnn_hidden(layer) and layer.rounds > 1 and i == len(model.layers) - 1:
            raise ConfigError(f"layer {i}: an RBNN hidden layer of {layer.rounds} rounds "
                              f"cannot be the last layer (its rounds' outputs are summed by "
                              f"a following layer whose rounds extend its inputs)")


def act_need(model: QuantModel, taps: int, im2col: bool = False) -> int:
    """Activations (``taps`` per word) the largest map stored on chip takes: the input
    map of every layer, in its :func:`map_layout`."""
    return max(stored_words(model, i, taps, im2col) for i in range(len(model.layers))) * taps


def stored_words(model: QuantModel, i: int, taps: int, im2col: bool = False) -> int:
    """Activation words layer ``i``'s input map takes on chip: :func:`map_words` of its
    :func:`map_layout`, except after an RBNN hidden layer, whose rounds each start a
    word (``rounds * ceil(H / taps)``, docs/model-format.md §2.12)."""
    if i and rbnn_hidden(model.layers[i - 1]):
        before = model.layers[i - 1]
        return before.rounds * -(-np.shape(before.slots)[0] // taps)
    shape = tuple(model.input_shape) if i == 0 else tuple(model.layers[i - 1].out_shape)
    return map_words(taps, shape, map_layout(model, i, im2col))


def rbnn_hidden(layer) -> bool:
    """An RBNN layer whose rounds add output units (run as one descriptor per round)."""
    return layer.slots is not None and layer.expand == "outputs"


def program_rows(model: QuantModel) -> int:
    """Descriptors ``model``'s program takes: one per layer, an RBNN hidden layer one
    per round."""
    return sum(layer.rounds if rbnn_hidden(layer) else 1 for layer in model.layers)


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
    if not cfg.int8_path:
        int8 = [i for i, layer in enumerate(model.layers) if layer.is_mac and not layer.is_pool]
        if int8:
            raise ConfigError(f"config field 'int8_path' is false (no int8 path) but layer "
                              f"{int8[0]} is an int8 layer; build with int8_path = true")
    # Index shapes and ranges against the pool: model.validate().


def _plan(cfg: AcceleratorConfig, model: QuantModel, i: int, im2col: bool) -> MacPlan:
    layer = model.layers[i]
    co = layer.out_shape[0]
    area = int(np.prod(layer.out_shape[1:])) if layer.kind == "conv3x3" else 1
    # A step reads one word: taps input channels at one kernel offset (conv), taps
    # consecutive inputs (dense).
    if layer.kind == "conv3x3" and map_layout(model, i, im2col) != "im2col":
        steps = 9 * -(-(layer.fan_in // 9) // cfg.taps)
    else:
        # dense, and an im2col first layer: taps consecutive dot-product inputs
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
        # The k = 1 filters past the last full one-pass group run in the free lanes of
        # the last two-pass group when they fit there (their second terms are 0): a
        # pass fewer than a one-pass group of their own.
        rest, two = n1 % cfg.lanes, co - n1
        if rest and two and -(-(rest + two) // cfg.lanes) == -(-two // cfg.lanes):
            n1 -= rest
        groups1, groups2 = -(-n1 // cfg.lanes), -(-(co - n1) // cfg.lanes)
    return MacPlan(order=order, n1=n1, groups1=groups1, groups2=groups2, steps=steps, area=area)


def _terms(layer, order, in_perm):
    """Per-filter term arrays ``[passes, Co, K]`` in compiled order and input order."""
    if layer.terms is not None:
        t = np.asarray(layer.terms, dtype=np.int64)
        vals = np.where(t == 0, 0, np.sign(t) << np.maximum(np.abs(t) - 1, 0))
    else:
        vals = layer.int_weight[None]       # int8 weights, or an mlg layer's generated ones
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
    "shift": "max_fan_in", "area": "act_depth", "carry": "act_depth", "lane_w": "act_depth",
    "group_w": "act_depth", "n1_w": "act_depth",
    "row_skip": "max_dim", "chan_skip": "max_dim", "groups1": "act_depth",
    "groups2": "act_depth", "n1": "act_depth", "channels": "act_depth",
    "round_steps": "tap_depth", "out_base": "act_depth", "round": "slot_bits",
    "gen_bc": "mlg_bc", "gen_v_base": "mlg_v_depth", "gen_a_base": "mlg_w1_depth",
    "gen_a_stride": "mlg_w1_depth", "gen_a_group": "mlg_w1_depth", "gen_b_base": "mlg_b_depth",
}
_DEPTH_FIELD = {"program": "program_depth", "taps": "tap_depth", "weights": "weight_depth",
                "bias": "bias_depth", "indices": "index_depth", "pool": "pool_size",
                **{f"mlg_{name}": f"mlg_{name}_depth" for name in ("v", "u", "b", "w1")}}


def _check_depths(cfg: AcceleratorConfig, regions: dict) -> None:
    depth = region_depths(cfg)
    for name in REGIONS:
        if len(regions[name]) > depth[name]:
            raise ConfigError(f"config field {_DEPTH_FIELD[name]!r} = {depth[name]} is too "
                              f"small: the model needs {len(regions[name])} {name} rows")


def _input_fields(cfg: AcceleratorConfig, model: QuantModel, index: int, im2col: bool) -> dict:
    """Layer 0's ``in_lanes``: the lanes of each input word the host sends."""
    if index:
        return {}
    layout = map_layout(model, 0, im2col)
    return {"in_lanes": input_lanes(cfg.taps, tuple(model.input_shape), layout)}


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


def _step_inputs(cfg: AcceleratorConfig, layer, plan: MacPlan, fan_in: int,
                 layout: str) -> list:
    """Per step, the dot-product input (``c*9 + ky*3 + kx`` for conv3x3, the input
    index for dense) each lane of the step's word carries, -1 for a lane that is no
    input: conv3x3 step ``s = g*9 + ky*3 + kx`` reads channels ``g*taps ..`` at
    ``(ky, kx)``; dense and im2col step ``s`` inputs ``s*taps ..``."""
    out = []
    for s in range(plan.steps):
        if layout == "grouped":
            g, r = divmod(s, 9)
            lanes = [(g * cfg.taps + j) * 9 + r for j in range(cfg.taps)]
        else:
            lanes = [s * cfg.taps + j for j in range(cfg.taps)]
        out.append([t if t < fan_in else -1 for t in lanes])
    return out


def _mac_taps(cfg: AcceleratorConfig, layer, plan: MacPlan, shape: tuple, fan_in: int,
              layout: str):
    """Tap rows of a MAC layer, one per step: the word ``pos + offset`` (conv3x3: group
    ``g`` at ``(dy, dx)``, ``offset = g*H*W + dy*W + dx``; im2col: group ``s`` at the
    position itself, ``offset = s*H*W``; dense: word ``s``) and the mask of its lanes
    that are inputs."""
    for s, inputs in enumerate(_step_inputs(cfg, layer, plan, fan_in, layout)):
        mask = sum(1 << j for j, t in enumerate(inputs) if t >= 0)
        if layout == "grouped":
            g, r = divmod(s, 9)
            dy, dx = r // 3 - 1, r % 3 - 1
            entry = dict(offset=g * plan.area + dy * shape[2] + dx, dy=dy, dx=dx, mask=mask)
        elif layout == "im2col":
            entry = dict(offset=s * plan.area, mask=mask)
        else:
            entry = dict(offset=s, mask=mask)
        yield pack(tap_fields(cfg), entry)


def _out_fields(cfg: AcceleratorConfig, layout: str, area: int, n1: int) -> dict:
    """The descriptor fields that say where a MAC layer's outputs go: the output map
    (``area`` positions) stored in ``layout``; ``n1`` is its first two-pass channel."""
    taps = cfg.taps
    if layout == "flat":
        def offset(c):                  # channel c's first activation, c*area
            return divmod(c * area, taps)
        carry = 1
    else:
        def offset(c):                  # channel c's group and lane
            return (c // taps) * area, c % taps
        carry = area
    (lane_w, lane_l), (group_w, group_l), (n1_w, n1_l) = (
        offset(1), offset(cfg.lanes), offset(n1))
    return dict(flat=int(layout == "flat"), carry=carry, lane_w=lane_w, lane_l=lane_l,
                group_w=group_w, group_l=group_l, n1_w=n1_w, n1_l=n1_l)


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


def _mlg_layer(cfg: AcceleratorConfig, model: QuantModel, i: int, regions: dict,
               plan: MacPlan, layout: str, stores: dict) -> dict:
    """Place MLG layer ``i``'s bases in ``stores`` (``sw/compile/mlg_layout.py``) and
    return its descriptor's generate fields; ConfigError if its rows do not fit the
    row buffer."""
    placed = place_layer(cfg, model, i, stores, grouped=layout == "grouped")
    if placed.steps != plan.steps or plan.groups2:
        raise AssertionError(f"layer {i}: the generator's rows ({placed.steps} steps) are not "
                             f"the issue stage's ({plan.steps} steps, {plan.groups2} two-pass)")
    rows = plan.groups1 * plan.steps
    if rows > cfg.weight_depth:
        raise ConfigError(f"config field 'weight_depth' = {cfg.weight_depth} is too small: "
                          f"layer {i}'s generated weight rows need {rows}")
    stride = placed.u_rows if placed.level1 else placed.steps
    return dict(
        gen_level1=int(placed.level1), gen_level2=int(placed.level2),
        gen_grouped=int(placed.grouped), gen_bc=placed.bc if placed.level2 else 0,
        gen_v_base=placed.bases["v"] if placed.level2 else 0,
        gen_b_base=placed.bases["b"] if placed.level1 else 0,
        gen_a_base=placed.bases["u"] if placed.level1 else placed.bases["w1"],
        gen_a_stride=stride,
        gen_a_group=cfg.lanes * stride if not placed.level2 and plan.groups1 > 1 else 0)


def _rbnn_layer(cfg: AcceleratorConfig, model: QuantModel, i: int, regions: dict,
                im2col: bool) -> MacPlan:
    """Lay out RBNN layer ``i`` (docs/model-format.md §2.12) and append its rows; the
    weight rows hold the trainer's storage slots once, whatever the rounds.

    A hidden layer (``expand="outputs"``, slots ``H x D``) runs as one descriptor per
    round ``r``: the same tap and weight rows, round ``r``'s biases, and its ``H``
    outputs from word ``r * ceil(H / taps)`` on (each round starts a word). The layer
    after it (``expand="inputs"``, slots ``C x H``) reads that map in ``rounds *
    ceil(H / taps)`` steps, round ``r``'s in steps ``r * ceil(H / taps) ..``, whose
    weight rows are the same ``ceil(H / taps)`` rows of slots every round
    (``round_steps``); the tap masks drop the lanes past ``H`` in each round."""
    layer = model.layers[i]
    slots = np.asarray(layer.slots, dtype=np.int64)
    hidden = rbnn_hidden(layer)
    taps, lanes = cfg.taps, cfg.lanes
    co, cols = slots.shape              # units per round (hidden) or outputs; slot inputs
    per_round = -(-cols // taps)        # steps over one round's inputs
    steps = per_round if hidden else layer.rounds * per_round
    groups = -(-co // lanes)
    last = i == len(model.layers) - 1
    tap_base = len(regions["taps"])
    for s in range(steps):
        first = (s % per_round) * taps
        mask = sum(1 << j for j in range(taps) if first + j < cols)
        regions["taps"].append(pack(tap_fields(cfg), dict(offset=s, mask=mask)))
    weight_base = len(regions["weights"])
    for g in range(groups):
        chans = [g * lanes + lane for lane in range(lanes)]
        for s in range(per_round):
            regions["weights"].append(_pack_array(
                [slots[ch, s * taps + j] if ch < co and s * taps + j < cols else 0
                 for ch in chans for j in range(taps)], cfg.code_width))
    bias = np.asarray(layer.bias, dtype=np.int64).reshape(-1, co)
    bias_base = len(regions["bias"])
    for round_bias in bias:
        for g in range(groups):
            regions["bias"].append(_pack_array(
                [round_bias[ch] if ch < co else 0 for ch in range(g * lanes, (g + 1) * lanes)],
                cfg.acc_width))
    for r in range(layer.rounds if hidden else 1):
        fields = dict(
            kind=KIND_MAC, last=int(last), src=i % 2, shift=int(layer.shift), height=1,
            width=1, area=1, steps=steps, tap_base=tap_base, weight_base=weight_base,
            bias_base=bias_base + r * groups, groups1=groups, n1=co, channels=co,
            round=r if hidden else 0, round_steps=0 if hidden else per_round,
            out_base=r * -(-co // taps) if hidden else 0, **_input_fields(cfg, model, i, im2col))
        if not last:
            fields.update(_out_fields(cfg, map_layout(model, i + 1), 1, co))
        regions["program"].append(_pack_descriptor(cfg, i, regions, fields))
    return MacPlan(order=np.arange(co), n1=co, groups1=groups, groups2=0, steps=steps, area=1,
                   descriptors=layer.rounds if hidden else 1)


def compile_model(model: QuantModel, cfg: AcceleratorConfig,
                  bits: int | dict | None = None, mode: str | dict = "direct",
                  im2col: bool | None = None) -> Image:
    """Lay ``model`` out for ``cfg``; raises :class:`ConfigError` naming what does not fit.

    ``bits`` is a pool model's run-time precision (as :func:`shiftpool.sw.schemes.golden.run`
    takes it): it sets each pool layer's ``plane_lo`` in the program, so changing it
    rewrites the program region only. ``mode`` picks direct or precompute evaluation
    per pool layer (as ``golden.run`` takes it); precompute needs a configuration with
    ``precompute_steps`` covering the layer's steps.

    ``im2col``: whether the first layer reads an im2col input (``docs/model-format.md``
    §2.2); it changes the tap rows, the program and the input values, never the
    hardware. ``None`` takes it where :func:`uses_im2col` says it packs into fewer
    words and its images fit the configuration's memories; ``True`` where it packs
    into fewer words.
    """
    model.validate()
    if im2col is None:
        if uses_im2col(model, cfg.taps):
            try:
                return compile_model(model, cfg, bits, mode, im2col=True)
            except ConfigError as error:
                # The im2col images do not fit the memories: the plain input's, or the
                # im2col error (what fit_config sizes for) if they do not fit either.
                try:
                    return compile_model(model, cfg, bits, mode, im2col=False)
                except ConfigError:
                    raise error from None
        im2col = False
    im2col = bool(im2col) and uses_im2col(model, cfg.taps)
    _check_fit(model, cfg, im2col)
    planes = golden.layer_bits(model, bits)
    modes = golden.layer_modes(model, mode)
    regions = {name: [] for name in REGIONS}
    if cfg.engine == "pool":
        regions["pool"] = _pool_rows(cfg, model)
    mlg_stores = {name: [] for name in STORES}
    plans = []
    in_perm = None          # permutation of the current feature map's channels
    shape = tuple(model.input_shape)
    for i, layer in enumerate(model.layers):
        src = i % 2
        last = i == len(model.layers) - 1
        if layer.kind == "maxpool2":
            c, h, w = shape
            oh, ow = h // 2, w // 2
            # The source is grouped; a grouped output is written a word per window of
            # `taps` channels, a flat one lane by lane.
            # `channels` counts channel groups, `n1` the last one's channels; a flat
            # output's next channel is `oh*ow` activations further.
            flat = map_layout(model, i + 1) == "flat"
            groups = -(-c // cfg.taps)
            lane_w, lane_l = divmod(oh * ow, cfg.taps) if flat else (0, 0)
            regions["program"].append(_pack_descriptor(cfg, i, regions, dict(
                kind=KIND_POOL, src=src, height=oh, width=ow, in_width=w, area=oh * ow,
                channels=groups, n1=c - (groups - 1) * cfg.taps, flat=int(flat),
                carry=int(flat), lane_w=lane_w, lane_l=lane_l,
                row_skip=2 * w - 2 * ow, chan_skip=(h - 2 * oh) * w,
                **_input_fields(cfg, model, i, im2col))))
            plans.append(None)
            shape = tuple(layer.out_shape)
            continue
        if layer.slots is not None:
            plans.append(_rbnn_layer(cfg, model, i, regions, im2col))
            shape = tuple(layer.out_shape)
            continue
        plan = _plan(cfg, model, i, im2col)
        plans.append(plan)
        co = layer.out_shape[0]
        tap_base = len(regions["taps"])
        bias_base = len(regions["bias"])
        bias = np.asarray(layer.bias, dtype=np.int64)[plan.order]
        if layer.is_pool:
            # Pool layers keep their channel order (no k to sort by), and so do the
            # int8 layers of a pool model. A step is one 8-vector: one word.
            regions["taps"].extend(_mac_taps(cfg, layer, plan, shape, layer.fan_in,
                                             map_layout(model, i, im2col)))
            row_region = "indices"
            index = np.asarray(layer.index, dtype=np.int64).reshape(co, plan.steps)
        else:
            vals = _terms(layer, plan.order, in_perm)
            fan_in = vals.shape[2]
            layout = map_layout(model, i, im2col)
            regions["taps"].extend(_mac_taps(cfg, layer, plan, shape, fan_in, layout))
            inputs = _step_inputs(cfg, layer, plan, fan_in, layout)
            row_region = "weights"
        gen_fields = {}
        if cfg.engine == "insitu":
            # MLG: the bases go to the generator's stores; the generate phase makes the
            # weight rows into the row buffer, from row 0, before the layer's beats.
            gen_fields = _mlg_layer(cfg, model, i, regions, plan, map_layout(model, i, im2col),
                                    mlg_stores)
            row_region = None
        # Weight rows: group by group, pass by pass, step by step.
        weight_base = len(regions[row_region]) if row_region else 0
        for g in range(plan.groups):
            one_pass = g < plan.groups1
            first = g * cfg.lanes if one_pass else plan.n1 + (g - plan.groups1) * cfg.lanes
            limit = plan.n1 if one_pass else co
            chans = [first + lane for lane in range(cfg.lanes)]
            # The engine's one's complement terms fall short by one per negative code
            # (engine_model.code_offset): the bias makes up for it, lane by lane.
            offsets = np.zeros(cfg.lanes, dtype=np.int64)
            for p in range(1 if one_pass else 2):
                for s in range(plan.steps):
                    if row_region is None:
                        continue
                    if layer.is_pool:
                        regions["indices"].append(_pack_array(
                            [index[ch, s] if ch < limit else 0 for ch in chans],
                            cfg.index_bits))
                        continue
                    codes = []
                    for ch in chans:
                        for t in inputs[s]:
                            ok = ch < limit and t >= 0 and p < len(vals)
                            codes.append(encode_code(cfg, vals[p, ch, t]) if ok else 0)
                    offsets += code_offset(cfg, np.reshape(codes, (cfg.lanes, -1))).sum(axis=1)
                    regions["weights"].append(_pack_array(codes, cfg.code_width))
            regions["bias"].append(_pack_array(
                [bias[ch] + offsets[lane] if ch < limit else 0
                 for lane, ch in enumerate(chans)], cfg.acc_width))
        h, w = (shape[1], shape[2]) if layer.kind == "conv3x3" else (1, 1)
        fields = dict(
            kind=KIND_MAC, last=int(last), src=src, shift=int(layer.shift),
            height=h, width=w, area=plan.area, steps=plan.steps, tap_base=tap_base,
            weight_base=weight_base, bias_base=bias_base, groups1=plan.groups1,
            groups2=plan.groups2, n1=plan.n1, channels=co, **gen_fields,
            **_input_fields(cfg, model, i, im2col))
        if not last:
            fields.update(_out_fields(cfg, map_layout(model, i + 1), plan.area, plan.n1))
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
    for name, rows in mlg_stores.items():
        regions[f"mlg_{name}"] = rows
    # The program region holds each descriptor as its program words.
    regions["program"] = [word for desc in regions["program"]
                          for word in descriptor_to_words(cfg, desc)]
    _check_depths(cfg, regions)
    return Image(config=cfg, model=model, regions=regions, plans=plans, planes=planes,
                 modes=modes, im2col=im2col)
