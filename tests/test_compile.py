"""The model compiler (``shiftpool.sw.compile.image``) and the accelerator configuration
(``shiftpool.hw.config``): random models on random engine shapes fit exactly the
memory they need, the images decode back to the model, and every limit that is one
too small raises a :class:`ConfigError` naming the config field."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from shiftpool.hw.config import AcceleratorConfig, ConfigError
from shiftpool.hw.memory_map import region_depths
from shiftpool.hw.program import descriptor_fields, field_width
from shiftpool.sim.kit import seeds
from shiftpool.sw.compile.image import compile_model, region_widths
from shiftpool.sw.model.file import Layer, ModelError, QuantModel
from shiftpool.sw.model.randmodel import random_model
from shiftpool.sw.schemes.registry import engine_for

SEEDS = seeds(24)
K_MODES = ("k1", "k2", "mixed")


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# -- random cases ----------------------------------------------------------------------------

@dataclasses.dataclass
class Case:
    seed: int
    model: QuantModel
    lanes: int
    taps: int

    @property
    def where(self) -> str:
        return f"seed {self.seed} ({self.model.scheme}, lanes {self.lanes}, taps {self.taps})"


def random_case(seed: int) -> Case:
    """A random model (scheme and k mode from the seed) and engine shape; layer widths
    are mostly not multiples of ``lanes``, fan-ins mostly not of ``taps``."""
    rng = np.random.default_rng(seed)
    scheme = ("flightnn", "int8")[seed % 2]
    model = random_model(
        rng, scheme=scheme, k_mode=K_MODES[seed // 2 % 3], act_bits=int(rng.integers(2, 9)),
        exp_bits=int(rng.integers(1, 5)),
        input_shape=(int(rng.integers(1, 4)), int(rng.integers(2, 8)), int(rng.integers(2, 8))),
        convs=tuple(int(c) for c in rng.integers(1, 8, size=int(rng.integers(1, 3)))),
        pool=bool(rng.integers(0, 2)),
        dense=tuple(int(c) for c in rng.integers(1, 12, size=int(rng.integers(1, 3)))))
    return Case(seed, model, lanes=int(rng.integers(1, 6)), taps=int(rng.integers(1, 10)))


def fan_in(layer: Layer) -> int:
    return layer.in_shape[0] * 9 if layer.kind == "conv3x3" else int(np.prod(layer.in_shape))


def groups(layer: Layer, lanes: int, last: bool) -> tuple[int, int]:
    """(one-pass, two-pass) lane groups: hidden layers gather the k = 1 filters first;
    the last layer keeps its order and runs two passes from its first group that has
    a k = 2 filter on."""
    co = layer.out_shape[0]
    k = np.ones(co, dtype=int) if layer.k is None else np.asarray(layer.k, dtype=int)
    if not last:
        n1 = int(np.sum(k == 1))
        one, two = ceil_div(n1, lanes), ceil_div(co - n1, lanes)
        # k = 1 filters of a partial group that fit into the last two-pass group's free
        # lanes join it (one pass fewer).
        if n1 % lanes and two and (n1 % lanes) + (co - n1) <= two * lanes:
            one -= 1
        return one, two
    group_k = [int(k[g:g + lanes].max()) for g in range(0, co, lanes)]
    one = group_k.index(2) if 2 in group_k else len(group_k)
    return one, len(group_k) - one


def im2col(layer: Layer, first: bool, taps: int) -> bool:
    """A first conv3x3 layer reads an im2col input when its 9*C inputs take fewer
    words than 9 words of ceil(C / taps) channel groups."""
    c = layer.in_shape[0]
    return first and layer.kind == "conv3x3" and ceil_div(9 * c, taps) < 9 * ceil_div(c, taps)


def step_count(layer: Layer, taps: int, first: bool = False) -> int:
    """Steps (words read) per pass: a conv3x3 step is one word of ``taps`` input
    channels at one of the 9 kernel offsets, a dense (or im2col) step ``taps``
    consecutive inputs."""
    if layer.kind == "conv3x3" and not im2col(layer, first, taps):
        return 9 * ceil_div(layer.in_shape[0], taps)
    return ceil_div(fan_in(layer), taps)


def step_input(layer: Layer, taps: int, s: int, j: int, first: bool = False) -> int:
    """The dot-product input (``c*9 + ky*3 + kx`` / dense input) lane ``j`` of step
    ``s`` carries."""
    if layer.kind == "conv3x3" and not im2col(layer, first, taps):
        g, r = divmod(s, 9)
        return (g * taps + j) * 9 + r
    return s * taps + j


def stored_words(model, i: int, shape: tuple, taps: int) -> int:
    """Words of layer ``i``'s input map: flat for a dense layer, channel-grouped else
    (an im2col input: 9*C channels)."""
    c, area = shape[0], int(np.prod(shape[1:]))
    if model.layers[i].kind == "dense":
        return ceil_div(c * area, taps)
    if im2col(model.layers[i], i == 0, taps):
        c *= 9
    return ceil_div(c, taps) * area


def needs(case: Case) -> dict:
    """The smallest value of every sizing field the model fits, computed from the model."""
    model, lanes, taps = case.model, case.lanes, case.taps
    taps_rows = weight_rows = bias_rows = 0
    for i, layer in enumerate(model.layers):
        if not layer.is_mac:
            continue
        steps = step_count(layer, taps, first=i == 0)
        g1, g2 = groups(layer, lanes, last=i == len(model.layers) - 1)
        taps_rows += steps
        bias_rows += g1 + g2
        weight_rows += steps * (g1 + 2 * g2)
    maps = [tuple(model.input_shape)] + [tuple(layer.out_shape) for layer in model.layers]
    return {
        "act_depth": max(stored_words(model, i, maps[i], taps)
                         for i in range(len(model.layers))) * taps,
        "out_depth": model.layers[-1].out_shape[0],
        "max_fan_in": max(fan_in(layer) for layer in model.layers if layer.is_mac),
        "max_dim": max(d for s in maps for d in s[1:]),
        "program_depth": len(model.layers),
        "tap_depth": taps_rows,
        "weight_depth": weight_rows,
        "bias_depth": bias_rows,
    }


def exact_config(case: Case, **override) -> AcceleratorConfig:
    fields = dict(engine=engine_for(case.model.scheme), lanes=case.lanes, taps=case.taps,
                  act_bits=case.model.act_bits, exp_bits=max(case.model.exp_bits, 1))
    fields.update(needs(case))
    fields.update(override)
    return AcceleratorConfig(**fields)


# -- decoding the images (written from the layout description, not from compile.py) -----------

def decode_code(cfg: AcceleratorConfig, code: int) -> int:
    if cfg.engine == "int8":
        return code - 256 if code >= 128 else code
    if not code >> (cfg.exp_bits + 1) & 1:
        assert code == 0, f"zero code with stray bits {code:#x}"
        return 0
    mag = 1 << (code & ((1 << cfg.exp_bits) - 1))
    return -mag if code >> cfg.exp_bits & 1 else mag


def signed(value: int, width: int) -> int:
    return value - (1 << width) if value >> (width - 1) else value


def check_images(case: Case, image) -> None:
    """Weight and bias rows decode to the model's integer weights and biases, in the
    compiled channel order; padding lanes and taps hold zero codes."""
    cfg, model, where = image.config, case.model, case.where
    weights, biases = iter(image.regions["weights"]), iter(image.regions["bias"])
    mask = (1 << cfg.code_width) - 1
    in_perm = None
    for i, (layer, plan) in enumerate(zip(model.layers, image.plans, strict=True)):
        if not layer.is_mac:
            assert plan is None, f"{where}: layer {i}"
            continue
        co, n_in = layer.out_shape[0], fan_in(layer)
        last = i == len(model.layers) - 1
        order = np.asarray(plan.order)
        assert sorted(order.tolist()) == list(range(co)), f"{where}: layer {i} order"
        k = np.ones(co, dtype=int) if layer.k is None else np.asarray(layer.k, dtype=int)
        if last:
            assert order.tolist() == list(range(co)), f"{where}: last layer reordered"
        else:
            assert np.all(np.diff(k[order]) >= 0), f"{where}: layer {i}: k=1 filters first"
        got_w = np.zeros((co, n_in), dtype=np.int64)
        got_b = np.zeros(co, dtype=np.int64)
        # one's complement terms (shift-add): a bias also holds its filter's number
        # of negative terms (docs/model-format.md §2.7)
        negative = np.zeros(co, dtype=np.int64)
        for g in range(plan.groups1 + plan.groups2):
            one_pass = g < plan.groups1
            first = g * cfg.lanes if one_pass else plan.n1 + (g - plan.groups1) * cfg.lanes
            limit = plan.n1 if one_pass else co
            row = next(biases)
            for lane in range(cfg.lanes):
                b = signed(row >> (lane * cfg.acc_width) & ((1 << cfg.acc_width) - 1),
                           cfg.acc_width)
                if first + lane < limit:
                    got_b[first + lane] = b
                else:
                    assert b == 0, f"{where}: layer {i} group {g}: padding bias"
            for _ in range(1 if one_pass else 2):
                for s in range(plan.steps):
                    row = next(weights)
                    for lane in range(cfg.lanes):
                        for j in range(cfg.taps):
                            code = row >> ((lane * cfg.taps + j) * cfg.code_width) & mask
                            ch, t = first + lane, step_input(layer, cfg.taps, s, j, i == 0)
                            if ch < limit and t < n_in:
                                got_w[ch, t] += decode_code(cfg, code)
                                if cfg.engine == "shiftadd":
                                    negative[ch] += decode_code(cfg, code) < 0
                            else:
                                assert code == 0, f"{where}: layer {i}: padding code"
        want = layer.int_weight[order]
        if in_perm is not None:
            ci = len(in_perm)
            want = want.reshape(co, ci, -1)[:, in_perm]
        assert np.array_equal(got_w, want.reshape(co, -1)), f"{where}: layer {i} weights"
        assert np.array_equal(got_b - negative, np.asarray(layer.bias)[order]), \
            f"{where}: layer {i} bias"
        in_perm = None if last else order
    assert next(weights, None) is None and next(biases, None) is None, f"{where}: extra rows"


# -- tests -----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
def test_exact_fit_compiles_and_decodes(seed):
    case = random_case(seed)
    cfg = exact_config(case)
    image = compile_model(case.model, cfg)
    need = needs(case)
    used = {name: len(rows) for name, rows in image.regions.items()}
    # docs/model-format.md §2.1: descriptor i is program rows i*P .. i*P + P - 1 of 16
    # bits, LSB first
    rows, p = image.regions["program"], -(-field_width(descriptor_fields(cfg)) // 16)
    joined = [sum(rows[i * p + k] << (16 * k) for k in range(p)) for i in range(len(rows) // p)]
    assert len(rows) == p * len(joined) and joined == image.descriptors, case.where
    assert len(image.descriptors) == need["program_depth"], case.where
    used["program"] = len(image.descriptors)
    assert used == {"program": need["program_depth"], "taps": need["tap_depth"],
                    "weights": need["weight_depth"], "bias": need["bias_depth"],
                    "indices": 0, "pool": 0, "mlg_v": 0, "mlg_u": 0, "mlg_b": 0, "mlg_w1": 0
                    }, case.where
    widths = region_widths(cfg)
    for name, rows in image.regions.items():
        assert all(0 <= row < 1 << widths[name] for row in rows), f"{case.where}: {name}"
    for name, entry in image.memory_map().items():
        assert entry["used"] <= entry["depth"], f"{case.where}: {name}"
    shape = tuple(case.model.input_shape)
    # docs/model-format.md §2.2: a flat input is sent unpadded, a grouped one as its
    # words' first min(C, taps) lanes (C: 9 x the channels for im2col)
    c = shape[0] * (9 if im2col(case.model.layers[0], True, case.taps) else 1)
    sent = (int(np.prod(shape)) if case.model.layers[0].kind == "dense"
            else stored_words(case.model, 0, shape, case.taps) * min(c, case.taps))
    assert image.input_words == sent, case.where
    assert image.output_words == case.model.classes, case.where
    check_images(case, image)


def test_cases_cover_the_space():
    """The random cases include every k mode, both schemes, lanes and taps that do not
    divide the layer sizes, and the 1-lane / 1-tap corners."""
    cases = [random_case(s) for s in SEEDS]
    assert {c.model.scheme for c in cases} == {"flightnn", "int8"}
    assert {c.lanes for c in cases} == {1, 2, 3, 4, 5}
    assert {1, 9} <= {c.taps for c in cases}
    ragged = [c for c in cases if any(
        layer.out_shape[0] % c.lanes or fan_in(layer) % c.taps
        for layer in c.model.layers if layer.is_mac)]
    assert len(ragged) >= len(cases) // 2
    modes = set()
    for c in cases:
        for layer in c.model.layers:
            if layer.k is not None:
                modes.add(tuple(sorted(set(np.asarray(layer.k).tolist()))))
    assert modes == {(1,), (2,), (1, 2)}
    # The max-pool descriptor's skips at their widest (hw/program.py sizes them from
    # max_dim): an odd input width equal to max_dim (row_skip = max_dim + 1), with an
    # odd height (chan_skip = max_dim).
    assert any(layer.in_shape[2] == exact_config(c).max_dim and layer.in_shape[2] % 2
               and layer.in_shape[1] % 2
               for c in cases for layer in c.model.layers if not layer.is_mac)


def test_larger_memories_give_the_same_image():
    seed = 5
    case = random_case(seed)
    tight = compile_model(case.model, exact_config(case))
    roomy = compile_model(case.model, exact_config(
        case, **{name: 2 * value + 3 for name, value in needs(case).items()}))
    check_images(case, roomy)
    # Weight codes depend on the engine shape only, not on memory sizes.
    assert roomy.regions["weights"] == tight.regions["weights"], case.where
    assert len(roomy.regions["taps"]) == len(tight.regions["taps"]), case.where


_DEPTH_FIELDS = ("tap_depth", "weight_depth", "bias_depth")
TOO_SMALL = ("act_depth", "out_depth", "max_fan_in", "max_dim", "program_depth") + _DEPTH_FIELDS


@pytest.mark.parametrize("field", TOO_SMALL)
def test_one_too_small_names_the_field(field):
    checked = 0
    for seed in SEEDS:
        case = random_case(seed)
        value = needs(case)[field] - 1
        if value < 1:
            continue
        cfg = exact_config(case, **{field: value})
        with pytest.raises(ValueError) as info:
            compile_model(case.model, cfg)
        message = str(info.value)
        assert info.type is ConfigError, f"{case.where}: {info.type.__name__}: {message}"
        assert f"'{field}'" in message, f"{case.where}: {message}"
        checked += 1
    assert checked >= len(SEEDS) // 2, f"{field}: only {checked} cases checked"


def _chain_model(scheme: str, sizes: list[int]) -> QuantModel:
    """A chain of dense layers ``sizes[0] -> sizes[1] -> ...`` with all-ones weights."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        last = i == len(sizes) - 2
        layer = Layer("dense", (a,) if i else (a, 1, 1), (b,), bias=np.zeros(b, np.int64),
                      shift=0 if last else 2, relu=not last)
        if scheme == "int8":
            layer.weight = np.ones((b, a), np.int8)
        else:
            layer.terms = np.stack([np.ones((b, a)), np.zeros((b, a))]).astype(np.int8)
            layer.k = np.ones(b, np.uint8)
        layers.append(layer)
    model = QuantModel(scheme=scheme, act_bits=4, input_shape=(sizes[0], 1, 1), input_frac=4,
                       layers=layers, exp_bits=2)
    model.validate()
    return model


@pytest.mark.parametrize("field", _DEPTH_FIELDS)
def test_depth_one_too_small_before_a_one_row_layer(field):
    """Five dense layers of one tap row, one weight row and one bias row each: with a
    depth of 4 the fifth layer's base address 4 does not fit the 2-bit descriptor
    field; the compiler must still say which config field is too small."""
    model = _chain_model("int8", [2, 2, 2, 2, 2, 1])
    cfg = AcceleratorConfig(engine="int8", lanes=2, taps=2, act_bits=4, **{field: 4})
    with pytest.raises(ConfigError, match=f"'{field}' = 4 is too small"):
        compile_model(model, cfg)
    compile_model(model, dataclasses.replace(cfg, **{field: 5}))


@pytest.mark.parametrize("act_depth", [4, 8])
def test_last_layer_wider_than_act_depth(act_depth):
    """20 outputs from 4 inputs: either the program holds the layer or a ConfigError
    names the field to raise; never a bare packing error."""
    model = _chain_model("int8", [4, 20])
    cfg = AcceleratorConfig(engine="int8", act_bits=4, act_depth=act_depth, out_depth=32)
    try:
        image = compile_model(model, cfg)
    except ConfigError as exc:
        assert "config field '" in str(exc), str(exc)
    else:
        assert len(image.descriptors) == 1


@pytest.mark.parametrize("max_dim", [20, 32])
def test_max_dim_covers_the_input_map(max_dim):
    pool = Layer("maxpool2", (1, 2, 40), (1, 1, 20))
    dense = Layer("dense", (1, 1, 20), (3,), weight=np.ones((3, 20), np.int8),
                  bias=np.zeros(3, np.int64))
    model = QuantModel("int8", 4, (1, 2, 40), 4, [pool, dense])
    model.validate()
    with pytest.raises(ConfigError, match="'max_dim'"):
        compile_model(model, AcceleratorConfig(engine="int8", act_bits=4, max_dim=max_dim))


def test_the_max_pool_unit_is_built_only_for_models_with_max_pools():
    """``fit_config`` leaves the max-pool unit out for a model without max-pool layers
    (and its dense first layer's input sides out of ``max_dim``); such a config refuses
    a model with a max-pool, naming the field."""
    from shiftpool.sw.compile.fit import fit_config

    rng = np.random.default_rng(7)
    mlp = random_model(rng, input_shape=(1, 9, 9), convs=(), pool=False, dense=(6, 3))
    cfg = fit_config(mlp, lanes=2, taps=4)
    assert cfg.maxpool is False and cfg.max_dim == 1
    cnn = random_model(rng, input_shape=(1, 6, 6), convs=(3,), pool=True, dense=(3,))
    assert fit_config(cnn, lanes=2, taps=4).maxpool is True
    with pytest.raises(ConfigError, match="config field 'maxpool' is false .* layer 1 is a "
                                          "max-pool; build with maxpool = true"):
        compile_model(cnn, dataclasses.replace(fit_config(cnn, lanes=2, taps=4),
                                               maxpool=False))
    with pytest.raises(ConfigError, match="'maxpool' = 1 must be true or false"):
        AcceleratorConfig(maxpool=1)


def test_the_int8_path_is_built_only_for_pool_models_with_int8_layers():
    """A pool model whose MAC layers are all pooled gets a pool engine without its int8
    path and without a weights region; such a config refuses a model with an int8
    layer, naming the field."""
    from shiftpool.sw.compile.fit import fit_config

    rng = np.random.default_rng(5)
    pooled = random_model(rng, scheme="pool", input_shape=(8, 3, 3), convs=(8,), pool=False,
                          dense=(3,), pool_size=16)
    cfg = fit_config(pooled, lanes=2)
    assert cfg.int8_path is False and region_depths(cfg)["weights"] == 0
    assert compile_model(pooled, cfg).regions["weights"] == []
    # one input channel: the first conv is not pooled
    mixed = random_model(rng, scheme="pool", input_shape=(1, 3, 3), convs=(8,), pool=False,
                         dense=(3,), pool_size=16)
    assert not mixed.layers[0].is_pool and fit_config(mixed, lanes=2).int8_path is True
    with pytest.raises(ConfigError, match="config field 'int8_path' is false .* layer 0 is "
                                          "an int8 layer; build with int8_path = true"):
        compile_model(mixed, dataclasses.replace(fit_config(mixed, lanes=2), int8_path=False))


@pytest.mark.parametrize("scheme", ["flightnn", "int8"])
def test_engine_must_match_scheme(scheme):
    seed = 50
    case = random_case(seed + (scheme == "int8"))
    assert case.model.scheme == scheme
    other = "int8" if engine_for(scheme) == "shiftadd" else "shiftadd"
    with pytest.raises(ConfigError) as info:
        compile_model(case.model, exact_config(case, engine=other))
    message = str(info.value)
    assert "'engine'" in message and f"engine={engine_for(scheme)!r}" in message, message


def test_act_bits_and_exp_bits_must_fit():
    case = next(c for c in map(random_case, SEEDS)
                if c.model.scheme == "flightnn" and c.model.exp_bits >= 2)
    act_bits = case.model.act_bits % 8 + 2
    with pytest.raises(ConfigError, match="'act_bits'"):
        compile_model(case.model, exact_config(case, act_bits=act_bits))
    with pytest.raises(ConfigError, match="'exp_bits'"):
        compile_model(case.model, exact_config(case, exp_bits=case.model.exp_bits - 1))
    # A wider exponent field than the model uses is fine.
    compile_model(case.model, exact_config(case, exp_bits=4))


def test_invalid_model_is_rejected():
    case = random_case(1)
    case.model.layers[0].bias = case.model.layers[0].bias[:-1]
    with pytest.raises(ModelError, match="layer 0: field 'bias'"):
        compile_model(case.model, exact_config(case))
    # A stray k on an int8 layer would steer the lane plan; it is refused up front.
    case = random_case(1)
    assert case.model.scheme == "int8"
    case.model.layers[0].k = np.ones(2, np.uint8)
    with pytest.raises(ModelError, match="layer 0: field 'k'"):
        compile_model(case.model, exact_config(case))


# -- AcceleratorConfig ---------------------------------------------------------------------------

@pytest.mark.parametrize("fields, needles", [
    ({"lanes": 0}, ["'lanes'", "= 0", "1..64"]),
    ({"lanes": 65}, ["'lanes'", "1..64"]),
    ({"taps": 0}, ["'taps'", "1..64"]),
    ({"act_bits": 1}, ["'act_bits'", "2..16"]),
    ({"exp_bits": 5}, ["'exp_bits'", "1..4"]),
    ({"engine": "fpu"}, ["'engine'", "'fpu'", "shiftadd", "int8"]),
    ({"act_depth": 0}, ["'act_depth'", ">= 1"]),
    ({"program_depth": 257}, ["'program_depth'", "1..256"]),
    ({"cycle_bits": 7}, ["'cycle_bits'", "8..64"]),
    ({"lanes": 2.0}, ["'lanes'", "integer"]),
    ({"taps": True}, ["'taps'", "integer"]),
    ({"writeback": "wide"}, ["'writeback'", "'wide'", "lane", "word"]),
], ids=lambda v: "-".join(f"{k}={v[k]}" for k in v) if isinstance(v, dict) else None)
def test_config_validation(fields, needles):
    with pytest.raises(ConfigError) as info:
        AcceleratorConfig(**fields)
    for needle in needles:
        assert needle in str(info.value), str(info.value)


def test_config_from_dict():
    cfg = AcceleratorConfig(engine="int8", lanes=3, taps=5, act_bits=6)
    assert AcceleratorConfig.from_dict(cfg.as_dict()) == cfg
    assert AcceleratorConfig.from_dict(cfg.as_dict()).hash == cfg.hash
    assert AcceleratorConfig(lanes=2).hash != AcceleratorConfig(lanes=3).hash
    with pytest.raises(ConfigError) as info:
        AcceleratorConfig.from_dict({"lanes": 2, "lane": 3})
    assert "field(s) lane;" in str(info.value), str(info.value)
    assert "allowed: " in str(info.value) and "lanes" in str(info.value), str(info.value)
    with pytest.raises(ConfigError, match="'lanes'"):
        AcceleratorConfig.from_dict({"lanes": 0})


def test_pool_model_misfits_name_the_config_field():
    """A pool model against configurations that cannot run it: each error names the
    field to change."""
    from shiftpool.sw.compile.fit import fit_config

    rng = np.random.default_rng(5)
    model = random_model(rng, scheme="pool", input_shape=(8, 3, 3), convs=(8,), pool=False,
                         dense=(3,), pool_size=16, pool_bits=6, lut_bits=12)
    good = fit_config(model, lanes=2)
    fields = good.as_dict()
    cases = {
        "pool_size": dict(fields, pool_size=8),
        "pool_bits": dict(fields, pool_bits=5),
        "lut_bits": dict(fields, lut_bits=10),
        "index_depth": dict(fields, index_depth=1),
    }
    for field, bad in cases.items():
        with pytest.raises(ConfigError, match=f"'{field}'"):
            compile_model(model, AcceleratorConfig(**bad))
    with pytest.raises(ConfigError, match="'precompute_steps'"):
        compile_model(model, good, mode="precompute")
    with pytest.raises(ConfigError, match="'precompute_steps'"):
        compile_model(model, AcceleratorConfig(**dict(fields, precompute_steps=2)),
                      mode="precompute")
    with pytest.raises(ConfigError, match="'taps'"):
        AcceleratorConfig(**dict(fields, taps=4))
    with pytest.raises(ConfigError, match="'lanes'"):
        AcceleratorConfig(**dict(fields, lanes=3, precompute_steps=9))
    with pytest.raises(ConfigError, match="'engine'"):
        compile_model(model, AcceleratorConfig(**dict(fields, engine="int8")))


def test_a_pool_larger_than_the_engine_table_names_pool_size():
    from shiftpool.sw.compile.fit import fit_config

    model = random_model(np.random.default_rng(9), scheme="pool", input_shape=(8, 3, 3),
                         convs=(8,), pool=False, dense=(3,), pool_size=300)
    model.validate()
    with pytest.raises(ConfigError, match=r"config field 'pool_size': the model's pool has "
                                          r"300 vectors; .* at most 256"):
        fit_config(model, lanes=2)
