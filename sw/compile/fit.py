"""Fit an accelerator configuration to a model: the smallest memories that hold it."""

from __future__ import annotations

import dataclasses

from ...hw.config import (
    DEFAULT_LANES,
    DEFAULT_TAPS,
    MAX_POOL_SIZE,
    POOL_GROUP,
    AcceleratorConfig,
    ConfigError,
    ceil_log2,
)
from ...hw.generator_layout import STORES
from ..model.file import QuantModel
from ..schemes import golden
from .cycles import writeback_stalls
from .image import (
    act_need,
    compile_model,
    engine_for_model,
    input_sides,
    program_rows,
    uses_im2col,
)
from .mlg_layout import generated_bits

__all__ = ["fit_config"]

#: Depths big enough for any model the built-in flows make; :func:`fit_config`
#: shrinks them to what the model uses.
_ROOMY = dict(act_depth=1 << 16, weight_depth=1 << 20, tap_depth=1 << 12, bias_depth=1 << 12,
              program_depth=256, out_depth=1 << 12, max_dim=4096)


def fit_config(model: QuantModel, lanes: int = DEFAULT_LANES, taps: int = DEFAULT_TAPS,
               mode="direct",
               **fields) -> AcceleratorConfig:
    """The smallest configuration with ``lanes`` x ``taps`` that runs ``model``.

    A pool model gets the pool engine, whose ``taps`` is always 8 (one group), so
    ``taps`` is ignored for it; ``mode`` (as :func:`shiftpool.sw.schemes.golden.run` takes it)
    sizes its precompute store for the layers run in precompute mode.

    Memory depths, ``max_fan_in``, ``max_dim`` and ``maxpool`` (whether the max-pool
    unit is built) are taken from the model;
    ``writeback`` is ``"word"`` where writing lane by lane would stall the engine on
    the model (:func:`~shiftpool.sw.compile.cycles.writeback_stalls`); any
    :class:`AcceleratorConfig` field given in ``fields`` overrides the fitted value
    (and is then checked against the model).

    Raises
    ------
    ConfigError
        If a field is invalid or an explicit one is too small for the model.
    """
    engine = engine_for_model(model)
    fan_in = max(layer.fan_in for layer in model.layers if layer.is_mac)
    sides = [d for layer in model.layers for d in layer.out_shape[1:]]
    sides += list(input_sides(model))
    base = dict(engine=engine, lanes=lanes, taps=taps, act_bits=model.act_bits,
                rounding=model.rounding,
                maxpool=any(layer.kind == "maxpool2" for layer in model.layers),
                exp_bits=max(model.exp_bits, 1), max_fan_in=fan_in, **_ROOMY)
    if engine == "pool" and len(model.pool) > MAX_POOL_SIZE:
        raise ConfigError(f"config field 'pool_size': the model's pool has {len(model.pool)} "
                          f"vectors; the pool engine's table holds at most {MAX_POOL_SIZE} "
                          f"(pool_size is S rounded up to a power of two); compress with "
                          f"--pool-size {MAX_POOL_SIZE} or fewer")
    if engine == "binary":
        base.update(slot_bits=max((layer.slot_bits for layer in model.layers
                                   if layer.slots is not None), default=16))
    if engine == "pool":
        # The pool engine takes groups of 8; its table is sized for the model's pool.
        base.update(taps=POOL_GROUP, pool_size=1 << ceil_log2(max(2, len(model.pool))),
                    pool_bits=model.pool_bits, lut_bits=model.lut_bits,
                    pool_table=model.pool_table,
                    int8_path=any(layer.is_mac and not layer.is_pool
                                  for layer in model.layers),
                    index_depth=1 << 20)
        steps = [model.layers[i].fan_in // POOL_GROUP
                 for i, m in golden.layer_modes(model, mode).items() if m == "precompute"]
        base.update(precompute_steps=max(steps, default=0))
    if engine == "insitu":
        # The generator's widths and basis sizes are the model's; the row buffer holds
        # the largest layer's generated rows.
        macs = [layer for layer in model.layers if layer.is_mac]
        base.update(mlg_qb=model.qb, mlg_qu=model.qu, mlg_qv=model.qv,
                    mlg_bi=max([la.mlg_b.shape[1] for la in macs if la.mlg_b is not None],
                               default=1),
                    mlg_bc=max([la.mlg_v.shape[1] for la in macs if la.mlg_v is not None],
                               default=1),
                    **{f"mlg_{name}_depth": 1 << 20 for name in STORES})
    roomy = AcceleratorConfig(**base)
    # Where the first layer can read an im2col input, room for the images with and
    # without it (the host picks per load: docs/model-format.md §2.2).
    im2col = uses_im2col(model, base["taps"])
    maps = [compile_model(model, roomy, mode=mode, im2col=choice).memory_map()
            for choice in ((False, True) if im2col else (False,))]
    used = {name: max(1, *(m[name]["used"] for m in maps)) for name in maps[0]}
    fitted = dict(base, act_depth=act_need(model, base["taps"], im2col),
                  weight_depth=used["weights"],
                  tap_depth=used["taps"], bias_depth=used["bias"],
                  program_depth=program_rows(model), out_depth=model.classes,
                  max_dim=max(sides, default=1))
    if engine == "pool":
        fitted.update(index_depth=used["indices"])
    if engine == "insitu":
        image = compile_model(model, roomy, mode=mode)
        fitted.update(weight_depth=max(p.groups1 * p.steps for p in image.plans if p),
                      mlg_w_bits=max(generated_bits(model, la) for la in model.layers
                                     if la.is_mac),
                      **{f"mlg_{name}_depth": used[f"mlg_{name}"] for name in STORES})
    fitted.update(fields)
    config = AcceleratorConfig.from_dict(fitted)
    image = compile_model(model, config, mode=mode)  # raises ConfigError naming what does not fit
    if "writeback" not in fields and config.lanes > 1 and config.taps > 1 \
            and writeback_stalls(image):
        # The write-back unit's word path costs a bias adder and a requantizer per
        # lane: only where writing lane by lane would hold the engine up.
        config = dataclasses.replace(config, writeback="word")
    return config
