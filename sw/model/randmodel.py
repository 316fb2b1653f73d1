"""Random integer models for randomized hardware tests.

The weights, biases and shifts are random but legal (they pass
:meth:`QuantModel.validate`), so the RTL can be compared with the golden model on
layer shapes, k mixes and pool sizes no trained model happens to have.
"""

from __future__ import annotations

import numpy as np

from ..schemes.pool_golden import table
from .file import GROUP, Layer, QuantModel, group_axis

__all__ = ["random_mlg_model", "random_model", "random_rbnn_model"]


def _mac(rng, kind, in_shape, co, scheme, exp_bits, k_mode, last, pool=None, pool_max=1):
    ci = in_shape[0] if kind == "conv3x3" else int(np.prod(in_shape))
    tail = (ci, 3, 3) if kind == "conv3x3" else (ci,)
    out_shape = (co, in_shape[1], in_shape[2]) if kind == "conv3x3" else (co,)
    fan_in = int(np.prod(tail))
    layer = Layer(kind=kind, in_shape=tuple(in_shape), out_shape=out_shape, relu=not last)
    if pool is not None and group_axis(kind, in_shape) % GROUP == 0:
        index_tail = (ci // GROUP, 3, 3) if kind == "conv3x3" else (ci // GROUP,)
        layer.index = rng.integers(0, len(pool), size=(co,) + index_tail).astype(np.uint16)
        wmax = pool_max
    elif scheme == "flightnn":
        top = 1 << exp_bits
        terms = rng.integers(-top, top + 1, size=(2, co) + tail)
        k = {"k1": np.ones(co), "k2": np.full(co, 2),
             "mixed": rng.integers(1, 3, size=co)}[k_mode].astype(np.int64)
        terms[1][k == 1] = 0
        layer.terms, layer.k = terms.astype(np.int8), k.astype(np.uint8)
        wmax = 2 * (1 << (top - 1))
    else:
        layer.weight = rng.integers(-127, 128, size=(co,) + tail).astype(np.int8)
        wmax = 127
    layer.bias = rng.integers(-wmax * 64, wmax * 64 + 1, size=co).astype(np.int64)
    # a shift that keeps typical activations in range without saturating all of them
    layer.shift = 0 if last else int(np.clip(np.log2(wmax * np.sqrt(fan_in) * 4), 0, 40))
    return layer, out_shape


def random_model(rng: np.random.Generator, scheme: str = "flightnn", act_bits: int = 8,
                 exp_bits: int = 3, k_mode: str = "mixed", input_shape=(2, 6, 5),
                 convs=(5,), pool: bool = True, dense=(7,), pool_size: int = 16,
                 pool_bits: int = 8, lut_bits: int = 16, pool_table: str = "full"
                 ) -> QuantModel:
    """A random legal model: ``convs`` conv3x3 widths, an optional max-pool, then
    ``dense`` widths (the last one is the output layer).

    ``scheme="pool"``: a random pool of ``pool_size`` vectors of ``pool_bits``-bit
    values (the extremes ``±(2**(pool_bits-1) - 1)`` included) and a lookup table of
    organisation ``pool_table``; layers whose input channels are a multiple of 8 get
    random indices, the others int8 weights.
    """
    vectors, pool_max = None, 1
    if scheme == "pool":
        top = (1 << (pool_bits - 1)) - 1
        vectors = rng.integers(-top, top + 1, size=(pool_size, GROUP))
        vectors[0, 0], vectors[-1, -1] = top, -top
        # A narrowed LUT divides a pool layer's accumulators by 2**shift.
        pool_max = max(1, top >> table(vectors, lut_bits, pool_table)[1])
    layers = []
    shape = tuple(input_shape)
    plan = [("conv3x3", c) for c in convs] + [("dense", c) for c in dense]
    for i, (kind, co) in enumerate(plan):
        last = i == len(plan) - 1
        layer, shape = _mac(rng, kind, shape, co, scheme, exp_bits, k_mode, last, vectors,
                            pool_max)
        layers.append(layer)
        if pool and kind == "conv3x3" and i == len(convs) - 1:
            out = (shape[0], shape[1] // 2, shape[2] // 2)
            layers.append(Layer(kind="maxpool2", in_shape=shape, out_shape=out))
            shape = out
    model = QuantModel(scheme=scheme, act_bits=act_bits, exp_bits=exp_bits,
                       input_shape=tuple(input_shape), input_frac=act_bits, layers=layers)
    if scheme == "pool":
        model.exp_bits = 0
        model.pool, model.pool_bits, model.lut_bits = vectors, pool_bits, lut_bits
        model.pool_table = pool_table
    model.validate()
    return model


def random_rbnn_model(rng: np.random.Generator, act_bits: int = 8, inputs: int = 12,
                      hidden: int = 5, classes: int = 4, rounds: int = 3,
                      slot_bits: int = 8) -> QuantModel:
    """A random legal RBNN MLP ``inputs - rounds*hidden - classes``: random storage
    slots (so every round's sign bits are random), biases and shifts."""
    top = 1 << slot_bits

    def layer(in_shape, slots, expand, units, last):
        fan_in = int(np.shape(slots)[1]) * (rounds if expand == "inputs" else 1)
        out = Layer(kind="dense", in_shape=in_shape, out_shape=(units,), relu=not last,
                    slots=slots.astype(np.uint16), slot_bits=slot_bits, rounds=rounds,
                    expand=expand)
        reach = (1 << act_bits) * fan_in // 2      # half the accumulator's range
        out.bias = rng.integers(-reach, reach + 1, size=units).astype(np.int64)
        out.shift = 0 if last else int(np.clip(np.log2(np.sqrt(fan_in) * 2), 0, 40))
        return out

    layers = [
        layer((inputs, 1, 1), rng.integers(0, top, size=(hidden, inputs)), "outputs",
              rounds * hidden, False),
        layer((rounds * hidden,), rng.integers(0, top, size=(classes, hidden)), "inputs",
              classes, True),
    ]
    model = QuantModel(scheme="rbnn", act_bits=act_bits, exp_bits=0, input_shape=(inputs, 1, 1),
                       input_frac=act_bits, layers=layers)
    model.validate()
    return model


def odd_values(rng: np.random.Generator, q: int, shape) -> np.ndarray:
    """Random odd integers within ``+-(2**q - 1)``, a fifth of them at the extremes
    (the MLG quantizer's levels)."""
    top = (1 << q) - 1
    v = 2 * rng.integers(-(top + 1) // 2, (top + 1) // 2, size=shape) + 1
    return np.where(rng.random(shape) < 0.2, rng.choice([-top, top], size=shape), v)


def random_mlg_model(rng: np.random.Generator, act_bits: int = 8, input_shape=(3, 5, 4),
                     convs=(5,), pool: bool = True, dense=(6,), qb: int = 3, qu: int = 6,
                     qv: int = 3, bi: int = 2, bc: int = 4) -> QuantModel:
    """A random legal MLG model (layers as :func:`random_model`'s): each MAC layer uses
    level 1 where ``0 < Bi < min(Ci, 9)`` allows it and a coin says so, level 2 likewise
    with ``Bc`` clipped below ``min(Co, Ci*kk)``, random odd bases and coefficients, so
    that every combination of levels occurs over a few seeds."""
    layers = []
    shape = tuple(input_shape)
    plan = [("conv3x3", c) for c in convs] + [("dense", c) for c in dense]
    for i, (kind, co) in enumerate(plan):
        last = i == len(plan) - 1
        conv = kind == "conv3x3"
        ci = shape[0] if conv else int(np.prod(shape))
        kk = 9 if conv else 1
        out = (co, shape[1], shape[2]) if conv else (co,)
        layer = Layer(kind=kind, in_shape=shape, out_shape=out, relu=not last)
        b_i = min(bi, ci - 1, kk - 1)
        b_c = min(bc, co - 1, ci * kk - 1)
        level1 = b_i > 0 and rng.random() < 0.7
        level2 = b_c > 0 and rng.random() < 0.7
        rows = b_c if level2 else co
        if level1:
            layer.mlg_u = odd_values(rng, qu, (rows, ci, b_i)).astype(np.int16)
            layer.mlg_b = odd_values(rng, qb, (rows, b_i, kk)).astype(np.int16)
            w1max = b_i * ((1 << qu) - 1) * ((1 << qb) - 1)
        else:
            layer.mlg_w1 = odd_values(rng, qu, (rows, ci, kk)).astype(np.int16)
            w1max = (1 << qu) - 1
        wmax = w1max
        if level2:
            layer.mlg_v = odd_values(rng, qv, (co, b_c)).astype(np.int16)
            wmax = w1max * b_c * ((1 << qv) - 1)
        fan_in = ci * kk
        # Random weights this wide sum to about wmax * sqrt(fan_in) / 2 * activation.
        reach = int(wmax * np.sqrt(fan_in)) << (act_bits - 2)
        layer.bias = rng.integers(-reach, reach + 1, size=co).astype(np.int64)
        layer.shift = 0 if last else int(np.clip(np.log2(wmax * np.sqrt(fan_in) * 2), 0, 60))
        layers.append(layer)
        shape = out
        if pool and conv and i == len(convs) - 1:
            pooled = (shape[0], shape[1] // 2, shape[2] // 2)
            layers.append(Layer(kind="maxpool2", in_shape=shape, out_shape=pooled))
            shape = pooled
    model = QuantModel(scheme="mlg", act_bits=act_bits, exp_bits=0,
                       input_shape=tuple(input_shape), input_frac=act_bits, layers=layers,
                       qb=qb, qu=qu, qv=qv)
    model.validate()
    return model
