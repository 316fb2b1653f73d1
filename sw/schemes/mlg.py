"""MLG: multi-level in-situ weight generation (Gu et al., ICCV 2021; ``../shared/SEEDS.md``
section 4).

A MAC layer's weights ``W [Co, Ci, kk]`` (``kk = 9`` for conv3x3, 1 for dense) are
generated from three small low-precision tensors:

```
level 1 (inside a kernel):  W1[c] = U[c] @ B[c]      B [Bc, Bi, kk], U [Bc, Ci, Bi]
level 2 (across kernels):   W     = V @ W1            V [Co, Bc], W1 as [Bc, Ci*kk]
```

Level 1 is used only when ``0 < Bi < min(Ci, kk)`` (never for dense layers), level 2
only when ``0 < Bc < min(Co, Ci*kk)``; a dense layer whose ``Bc`` is too large uses
``int(0.9 * min(Co, Ci))`` instead (the paper's 1x1 rule). Without level 1, ``W1``
itself is stored (at ``qu`` bits); without level 2, ``W = W1`` (``Bc = Co``, no ``V``).

Each stored tensor is quantized with its own width (``qb``, ``qu``, ``qv``) to odd
integer levels ``m`` in ``-(2**q - 1) .. 2**q - 1`` (no zero) after ``tanh``, as the
paper's code does, except that the step is a power of two (``2**-e``) so that the
accelerator needs only shifts: ``m = clip(2*floor(tanh(x) * 2**e / 2) + 1, ...)``
with ``e = round(log2((2**q - 1) / max|tanh(x)|))``. The generated integer weight
``V_int @ (U_int @ B_int)`` is exact (never re-quantized) at scale
``2**-(e_B + e_U + e_V)``.

Training: the tensors are first projected from the trained float teacher
(``min ||W - V U B||^2`` by truncated SVDs, level 2 then level 1), then fine-tuned
through the quantizers (straight-through) with distillation from the teacher
(temperature 3, ``beta = 0.9``) and an orthogonality penalty on the rows of B, the
columns of U and of V.
"""

from __future__ import annotations

import numpy as np

from ..train.nn import WeightTransform
from .registry import Option, Quantizer, Scheme, register

__all__ = ["MLG", "MLGQuantizer", "MLGTransform", "layer_levels", "odd_quantize"]

#: Orthogonality penalty weight.
ORTHO_LAMBDA = 0.01


def odd_quantize(x: np.ndarray, q: int) -> tuple[np.ndarray, int]:
    """Odd integer levels of ``tanh(x)`` at a power-of-two step: ``(m, e)`` with
    ``tanh(x) ~= m * 2**-e``, ``m`` odd in ``-(2**q - 1) .. 2**q - 1`` (int64)."""
    t = np.tanh(np.asarray(x, dtype=np.float64))
    top = (1 << q) - 1
    peak = float(np.max(np.abs(t), initial=0.0))
    e = int(np.round(np.log2(top / peak))) if peak > 0 else 0
    m = 2 * np.floor(t * 2.0 ** e / 2.0).astype(np.int64) + 1
    return np.clip(m, -top, top), e


def layer_levels(kind: str, co: int, ci: int, bi: int, bc: int) -> tuple[int, int]:
    """``(Bi, Bc)`` a layer uses: 0 where a level is off (see the module docstring)."""
    kk = 9 if kind == "conv3x3" else 1
    use_bi = bi if 0 < bi < min(ci, kk) else 0
    if kind == "dense" and not 0 < bc < min(co, ci):
        bc = int(0.9 * min(co, ci))
    use_bc = bc if 0 < bc < min(co, ci * kk) else 0
    return use_bi, use_bc


def _svd_split(m: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """``(L, R)`` with ``L @ R`` the best rank-``rank`` approximation of ``m``."""
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    root = np.sqrt(s[:rank])
    return u[:, :rank] * root, root[:, None] * vt[:rank]


class MLGTransform(WeightTransform):
    """Generated weights of every MAC layer from latent B, U, V (straight-through
    quantizers); the float weights themselves do not train."""

    def __init__(self, model, options):
        self.options = options
        self.parts = {}     # layer index -> {"B", "U", "V"} latent arrays (those used)
        self.shape = {}
        self.levels = {}
        self._grads = {}
        for i, layer in enumerate(model.layers):
            if layer.kind not in ("conv3x3", "dense"):
                continue
            w = layer.weight
            co, ci = w.shape[0], w.shape[1]
            kk = 9 if layer.kind == "conv3x3" else 1
            bi, bc = layer_levels(layer.kind, co, ci, options["bi"], options["bc"])
            self.levels[i], self.shape[i] = (bi, bc), w.shape
            mat = w.reshape(co, ci * kk)
            parts = {}
            if bc:
                parts["V"], w1 = _svd_split(mat, bc)
            else:
                w1 = mat
            w1 = w1.reshape(-1, ci, kk)
            if bi:
                us, bs = zip(*(_svd_split(w1[c], bi) for c in range(len(w1))), strict=True)
                parts["U"], parts["B"] = np.stack(us), np.stack(bs)
            else:
                parts["W1"] = w1.copy()
            self.parts[i] = parts
            self._grads[i] = {k: np.zeros_like(v) for k, v in parts.items()}

    # -- the generated weight ------------------------------------------------------

    def _widths(self):
        o = self.options
        return {"B": o["qb"], "U": o["qu"], "W1": o["qu"], "V": o["qv"]}

    def quantized(self, i: int) -> dict:
        """``{name: (m, e)}`` of layer ``i``'s stored tensors."""
        widths = self._widths()
        return {k: odd_quantize(v, widths[k]) for k, v in self.parts[i].items()}

    def integer_weight(self, i: int) -> tuple[np.ndarray, int]:
        """Layer ``i``'s generated integer weights (int64, the layer's shape) and the
        exponent of their scale (``w ~= w_int * 2**-wf``)."""
        q = self.quantized(i)
        if "B" in q:
            w1 = np.einsum("cib,cbk->cik", q["U"][0], q["B"][0])
            wf = q["U"][1] + q["B"][1]
        else:
            w1, wf = q["W1"]
        w1 = w1.reshape(len(w1), -1)
        if "V" in q:
            w, wf = q["V"][0] @ w1, wf + q["V"][1]
        else:
            w = w1
        return w.reshape(self.shape[i]), wf

    def _float_parts(self, i):
        return {k: m * 2.0 ** -e for k, (m, e) in self.quantized(i).items()}

    def __call__(self, index, weight):
        p = self._float_parts(index)
        w1 = np.einsum("cib,cbk->cik", p["U"], p["B"]) if "B" in p else p["W1"]
        w1 = w1.reshape(len(w1), -1)
        w = p["V"] @ w1 if "V" in p else w1
        self._last = (index, p, w1)
        return w.reshape(self.shape[index])

    def backward(self, index, grad):
        # The forward of this layer ran last for it: recompute its parts (cheap).
        p = self._float_parts(index)
        w1 = np.einsum("cib,cbk->cik", p["U"], p["B"]) if "B" in p else p["W1"]
        w1m = w1.reshape(len(w1), -1)
        g = grad.reshape(grad.shape[0], -1)
        grads = self._grads[index]
        if "V" in p:
            grads["V"][...] = g @ w1m.T
            g1 = (p["V"].T @ g).reshape(w1.shape)
        else:
            g1 = g.reshape(w1.shape)
        if "B" in p:
            grads["U"][...] = np.einsum("cik,cbk->cib", g1, p["B"])
            grads["B"][...] = np.einsum("cib,cik->cbk", p["U"], g1)
        else:
            grads["W1"][...] = g1
        self._add_ortho_grads(index)
        return np.zeros_like(grad)         # the latent float weights do not train

    # -- orthogonality ---------------------------------------------------------------

    def _ortho_terms(self, i):
        """The matrices whose rows should be orthogonal: B[c] (Bi rows), U[c]^T, V^T."""
        parts = self.parts[i]
        if "B" in parts:
            for c in range(len(parts["B"])):
                yield ("B", c, False), parts["B"][c]
                yield ("U", c, True), parts["U"][c].T
        if "V" in parts:
            yield ("V", None, True), parts["V"].T

    @staticmethod
    def _offdiag(m):
        gram = m @ m.T
        return gram - np.diag(np.diag(gram))

    def _add_ortho_grads(self, i):
        for (name, c, transposed), m in self._ortho_terms(i):
            g = 4 * ORTHO_LAMBDA * self._offdiag(m) @ m
            g = g.T if transposed else g
            if c is None:
                self._grads[i][name] += g
            else:
                self._grads[i][name][c] += g

    def penalty(self):
        return ORTHO_LAMBDA * sum(float(np.sum(self._offdiag(m) ** 2))
                                  for i in self.parts for _, m in self._ortho_terms(i))

    def params(self):
        return [v for i in sorted(self.parts) for _, v in sorted(self.parts[i].items())]

    def grads(self):
        return [v for i in sorted(self._grads) for _, v in sorted(self._grads[i].items())]


class MLGQuantizer(Quantizer):
    """Projection from the teacher, then fine-tuning through :class:`MLGTransform`
    with distillation; the integer weights are the exact generated ones."""

    def __init__(self, model, options, seed):
        super().__init__(model, options, seed)
        self.teacher = model.copy()
        self.transform = MLGTransform(model, self.options)

    def fit(self, model, x, y, values, seed, progress):
        from ..train.nn import train

        train(model, x, y, epochs=values["epochs"], batch_size=values["batch_size"],
              lr=values["lr"], seed=seed, progress=progress, weight_transform=self.transform,
              teacher=self.teacher, temperature=3.0, beta=0.9)
        return model

    def model_fields(self):
        return {name: self.options[name] for name in ("qb", "qu", "qv")}

    def integerize(self, index, weight):
        q = self.transform.quantized(index)
        fields = {f"mlg_{name.lower()}": m.astype(np.int16) for name, (m, _) in q.items()}
        return fields, sum(e for _, e in q.values())

    def meta(self, qm):
        t = self.transform
        layers = []
        stored = 0
        for i in sorted(t.parts):
            widths = t._widths()
            bits = sum(int(v.size) * widths[k] for k, v in t.parts[i].items())
            stored += bits
            bi, bc = t.levels[i]
            layers.append({"layer": i, "Bi": bi, "Bc": bc,
                           "shapes": {k: list(v.shape) for k, v in t.parts[i].items()},
                           "stored_bits": bits, "weights": int(np.prod(t.shape[i]))})
        weights = sum(layer["weights"] for layer in layers)
        return {"mlg_layers": layers, "stored_weight_bits": stored,
                "int8_weight_bits": 8 * weights, "stored_bits_per_weight": stored / weights}


MLG = register(Scheme(
    name="mlg", summary="multi-level in-situ generation: weights generated from small "
    "low-precision bases and coefficients (W = V U B)", stored_as="mlg", engine="insitu",
    options=(
        Option("bi", int, 2, 0, None, "mlg: level-1 basis size Bi (0: level 1 off)"),
        Option("bc", int, 44, 0, None, "mlg: level-2 basis size Bc (0: level 2 off)"),
        Option("qb", int, 3, 2, 8, "mlg: bits of the bases B"),
        Option("qu", int, 6, 2, 8, "mlg: bits of the coefficients U"),
        Option("qv", int, 3, 2, 8, "mlg: bits of the mixing coefficients V"),
    ), quantizer=MLGQuantizer, sweep=tuple((f"bc={b}", {"bc": b}) for b in (4, 8))))


def device_bits(image) -> dict:
    """What an mlg model's compiled ``image`` puts in the accelerator: ``loaded``, the
    bits of the generator's store rows the host writes (``q + 1`` bits per value and the
    rows' padding, ``docs/model-format.md`` §2.13), and ``row_buffer``, the bits of the
    buffer that holds one layer's generated rows at a time (``weight_depth`` rows)."""
    from ...hw.memory_map import region_widths

    widths = region_widths(image.config)
    loaded = sum(len(image.regions[name]) * widths[name]
                 for name in ("mlg_v", "mlg_u", "mlg_b", "mlg_w1"))
    cfg = image.config
    return {"loaded": loaded,
            "row_buffer": cfg.weight_depth * cfg.lanes * cfg.taps * cfg.code_width}
