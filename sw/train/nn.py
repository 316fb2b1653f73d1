"""A small numpy training library: the float models that compression starts from.

Layers work on NCHW float64 arrays and keep what their backward pass needs from the
last forward pass. A :class:`FloatModel` is an ordered list of layers; :func:`train`
fits it with softmax cross-entropy and :class:`Adam`. Float models are stored as
``.npz`` files with a JSON header (``"format": "shiftpool-float-model"``).

Quantization-aware fine-tuning plugs in through a :class:`WeightTransform`: per MAC
layer it maps the latent float weights to the weights the forward pass uses, and
maps the gradient back (straight through by default).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..model.npzfile import json_header, open_npz

__all__ = [
    "FLOAT_FORMAT", "FLOAT_VERSION", "FloatModelError",
    "Conv3x3", "Dense", "ReLU", "MaxPool2", "FloatModel",
    "softmax_cross_entropy", "Adam", "WeightTransform", "train",
    "save_float_model", "load_float_model",
]

FLOAT_FORMAT = "shiftpool-float-model"
FLOAT_VERSION = 1


class FloatModelError(ValueError):
    """A malformed float model or float model file; the message names the field."""


# -- layers ------------------------------------------------------------------------


class Conv3x3:
    """3x3 convolution, stride 1, zero padding 1, computed with im2col.

    Parameters
    ----------
    in_channels, out_channels:
        Channel counts; the weight is ``[out_channels, in_channels, 3, 3]``.
    rng:
        Generator for He-normal initialization; zero weights when omitted (for
        loading).
    """

    kind = "conv3x3"

    def __init__(self, in_channels: int, out_channels: int,
                 rng: np.random.Generator | None = None) -> None:
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        shape = (self.out_channels, self.in_channels, 3, 3)
        fan_in = self.in_channels * 9
        self.weight = (rng.normal(0.0, np.sqrt(2.0 / fan_in), shape) if rng is not None
                       else np.zeros(shape))
        self.bias = np.zeros(self.out_channels)
        self.grads = {"weight": np.zeros(shape), "bias": np.zeros(self.out_channels)}

    @property
    def params(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight, "bias": self.bias}

    def out_shape(self, in_shape: tuple) -> tuple:
        if len(in_shape) != 3 or in_shape[0] != self.in_channels:
            raise FloatModelError(f"conv3x3 expects a ({self.in_channels}, H, W) input, "
                                  f"not {tuple(in_shape)}")
        return (self.out_channels, in_shape[1], in_shape[2])

    @staticmethod
    def _im2col(x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        pad = np.zeros((n, c, h + 2, w + 2))
        pad[:, :, 1:-1, 1:-1] = x
        cols = np.stack([pad[:, :, ky:ky + h, kx:kx + w] for ky in range(3) for kx in range(3)],
                        axis=2)
        # Column order (c, ky, kx) matches weight.reshape(Co, -1).
        return cols.transpose(0, 3, 4, 1, 2).reshape(n * h * w, c * 9)

    def forward(self, x: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        """Convolve ``x`` with ``weight`` (default: the layer's own weight)."""
        w = self.weight if weight is None else weight
        n, _, h, wd = x.shape
        cols = self._im2col(x)
        self._cache = (x.shape, cols, w)
        out = cols @ w.reshape(self.out_channels, -1).T + self.bias
        return out.reshape(n, h, wd, self.out_channels).transpose(0, 3, 1, 2)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        """Store gradients wrt the weight used in forward and the bias; return dL/dx."""
        shape, cols, w = self._cache
        n, c, h, wd = shape
        g = grad.transpose(0, 2, 3, 1).reshape(n * h * wd, self.out_channels)
        self.grads["weight"] = (g.T @ cols).reshape(w.shape)
        self.grads["bias"] = g.sum(axis=0)
        dcols = (g @ w.reshape(self.out_channels, -1)).reshape(n, h, wd, c, 9)
        dcols = dcols.transpose(0, 3, 4, 1, 2)
        dpad = np.zeros((n, c, h + 2, wd + 2))
        for j in range(9):
            ky, kx = divmod(j, 3)
            dpad[:, :, ky:ky + h, kx:kx + wd] += dcols[:, :, j]
        return dpad[:, :, 1:-1, 1:-1]


class Dense:
    """Fully connected layer on the flattened (C order) input; weight ``[out, in]``.

    Parameters
    ----------
    in_features, out_features:
        Sizes; the input is flattened, so a ``(C, H, W)`` map has ``C*H*W`` features.
    rng:
        Generator for He-normal initialization; zero weights when omitted.
    """

    kind = "dense"

    def __init__(self, in_features: int, out_features: int,
                 rng: np.random.Generator | None = None) -> None:
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        shape = (self.out_features, self.in_features)
        self.weight = (rng.normal(0.0, np.sqrt(2.0 / self.in_features), shape)
                       if rng is not None else np.zeros(shape))
        self.bias = np.zeros(self.out_features)
        self.grads = {"weight": np.zeros(shape), "bias": np.zeros(self.out_features)}

    @property
    def params(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight, "bias": self.bias}

    def out_shape(self, in_shape: tuple) -> tuple:
        if int(np.prod(in_shape)) != self.in_features:
            raise FloatModelError(f"dense expects {self.in_features} input features, "
                                  f"not {tuple(in_shape)}")
        return (self.out_features,)

    def forward(self, x: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        """``flatten(x) @ weight.T + bias`` (default: the layer's own weight)."""
        w = self.weight if weight is None else weight
        flat = x.reshape(len(x), -1)
        self._cache = (x.shape, flat, w)
        return flat @ w.T + self.bias

    def backward(self, grad: np.ndarray) -> np.ndarray:
        """Store gradients wrt the weight used in forward and the bias; return dL/dx."""
        shape, flat, w = self._cache
        self.grads["weight"] = grad.T @ flat
        self.grads["bias"] = grad.sum(axis=0)
        return (grad @ w).reshape(shape)


class ReLU:
    """``max(x, 0)``."""

    kind = "relu"
    params: dict[str, np.ndarray] = {}

    def out_shape(self, in_shape: tuple) -> tuple:
        return tuple(in_shape)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._mask = x > 0
        return np.where(self._mask, x, 0.0)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return np.where(self._mask, grad, 0.0)


class MaxPool2:
    """2x2 max-pool, stride 2; an odd last row or column is dropped (floor)."""

    kind = "maxpool2"
    params: dict[str, np.ndarray] = {}

    def out_shape(self, in_shape: tuple) -> tuple:
        if len(in_shape) != 3 or in_shape[1] < 2 or in_shape[2] < 2:
            raise FloatModelError(f"maxpool2 needs a (C, H, W) map with H, W >= 2, "
                                  f"not {tuple(in_shape)}")
        return (in_shape[0], in_shape[1] // 2, in_shape[2] // 2)

    def forward(self, x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        ho, wo = h // 2, w // 2
        win = x[:, :, :ho * 2, :wo * 2].reshape(n, c, ho, 2, wo, 2)
        win = win.transpose(0, 1, 2, 4, 3, 5).reshape(n, c, ho, wo, 4)
        # One winner per window, so ties send the gradient to a single input.
        idx = win.argmax(axis=-1)[..., None]
        self._cache = (x.shape, idx)
        return np.take_along_axis(win, idx, axis=-1)[..., 0]

    def backward(self, grad: np.ndarray) -> np.ndarray:
        shape, idx = self._cache
        n, c, h, w = shape
        ho, wo = h // 2, w // 2
        win = np.zeros((n, c, ho, wo, 4))
        np.put_along_axis(win, idx, grad[..., None], axis=-1)
        out = np.zeros(shape)
        out[:, :, :ho * 2, :wo * 2] = (win.reshape(n, c, ho, wo, 2, 2)
                                       .transpose(0, 1, 2, 4, 3, 5).reshape(n, c, ho * 2, wo * 2))
        return out


FloatLayer = Conv3x3 | Dense | ReLU | MaxPool2
_MAC_KINDS = ("conv3x3", "dense")


# -- weight transforms (quantization-aware training) -----------------------------------


class WeightTransform:
    """Hook for quantization-aware training: latent weights -> forward weights.

    :func:`train` calls ``transform(index, weight)`` for every MAC layer (``index`` is
    the layer's position in :attr:`FloatModel.layers`) before that layer's forward
    pass, and ``transform.backward(index, grad)`` with the gradient wrt the forward
    weights; the result is the gradient applied to the latent weights. The default
    backward is the straight-through estimator (identity).

    A transform may own trainable parameters of its own (:meth:`params`, with
    gradients in :meth:`grads`, stepped by the same optimizer) and add a penalty to
    the loss (:meth:`penalty`, whose gradient it folds into :meth:`grads`).
    Subclasses override :meth:`__call__` and what they need of the rest.
    """

    def __call__(self, index: int, weight: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, index: int, grad: np.ndarray) -> np.ndarray:
        """Gradient wrt the latent weights from the one wrt the forward weights."""
        return grad

    def params(self) -> list[np.ndarray]:
        """Extra trainable arrays (updated in place by the optimizer)."""
        return []

    def grads(self) -> list[np.ndarray]:
        """Gradients of :meth:`params` for the last forward + backward pass."""
        return []

    def penalty(self) -> float:
        """Regularization term of the last forward pass, added to the loss."""
        return 0.0


class _FunctionTransform(WeightTransform):
    """Wraps a plain ``f(index, weight)`` callable with a straight-through backward."""

    def __init__(self, fn: Callable[[int, np.ndarray], np.ndarray]) -> None:
        self.fn = fn

    def __call__(self, index: int, weight: np.ndarray) -> np.ndarray:
        return self.fn(index, weight)


TransformLike = WeightTransform | Callable[[int, np.ndarray], np.ndarray]


def _as_transform(t: TransformLike | None) -> WeightTransform | None:
    if t is None or isinstance(t, WeightTransform):
        return t
    if not callable(t):
        raise ValueError(f"weight_transform must be a WeightTransform or a callable "
                         f"(index, weight) -> weight, not {type(t).__name__}")
    return _FunctionTransform(t)


# -- model -------------------------------------------------------------------------


class FloatModel:
    """An ordered list of layers on inputs of shape ``(N, *input_shape)``.

    Parameters
    ----------
    layers:
        :class:`Conv3x3`, :class:`Dense`, :class:`ReLU` and :class:`MaxPool2` layers.
    input_shape:
        ``(C, H, W)`` of one sample.
    meta:
        Free-form JSON-able information (training recipe, accuracy), saved with the
        model.

    Raises
    ------
    FloatModelError
        If the layer shapes do not chain.
    """

    def __init__(self, layers: Sequence[FloatLayer], input_shape: tuple,
                 meta: dict | None = None) -> None:
        self.layers = list(layers)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.meta = dict(meta or {})
        self.shapes()

    def shapes(self) -> list[tuple]:
        """Per-sample shapes: the input's, then every layer's output."""
        shapes = [self.input_shape]
        for i, layer in enumerate(self.layers):
            try:
                shapes.append(layer.out_shape(shapes[-1]))
            except FloatModelError as exc:
                raise FloatModelError(f"layer {i}: {exc}") from None
        return shapes

    def forward(self, x: np.ndarray, weight_transform: TransformLike | None = None) -> np.ndarray:
        """Logits for ``x``; MAC layers use ``weight_transform(i, weight)`` if given."""
        transform = _as_transform(weight_transform)
        a = np.asarray(x, dtype=np.float64)
        for i, layer in enumerate(self.layers):
            if layer.kind in _MAC_KINDS:
                w = transform(i, layer.weight) if transform is not None else None
                a = layer.forward(a, w)
            else:
                a = layer.forward(a)
        return a

    def backward(self, grad: np.ndarray,
                 weight_transform: TransformLike | None = None) -> np.ndarray:
        """Backpropagate ``grad`` (dL/dlogits) from the last :meth:`forward`.

        Leaves each MAC layer's ``grads`` wrt its latent parameters (through
        ``weight_transform.backward``) and returns dL/dx.
        """
        transform = _as_transform(weight_transform)
        for i in reversed(range(len(self.layers))):
            layer = self.layers[i]
            grad = layer.backward(grad)
            if transform is not None and layer.kind in _MAC_KINDS:
                layer.grads["weight"] = transform.backward(i, layer.grads["weight"])
        return grad

    def params(self) -> list[np.ndarray]:
        """All trainable arrays, in layer order (updated in place by :class:`Adam`)."""
        return [p for layer in self.layers for p in layer.params.values()]

    def grads(self) -> list[np.ndarray]:
        """Gradients matching :meth:`params` from the last :meth:`backward`."""
        return [layer.grads[k] for layer in self.layers for k in layer.params]

    def predict(self, x: np.ndarray, batch_size: int = 512,
                weight_transform: TransformLike | None = None) -> np.ndarray:
        """Predicted class per sample (int64)."""
        x = np.asarray(x, dtype=np.float64)
        out = [self.forward(x[i:i + batch_size], weight_transform).argmax(axis=1)
               for i in range(0, len(x), batch_size)]
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)

    def accuracy(self, x: np.ndarray, y: np.ndarray,
                 weight_transform: TransformLike | None = None) -> float:
        """Share of samples whose predicted class equals ``y``."""
        y = np.asarray(y)
        if len(y) == 0:
            raise ValueError("accuracy: y is empty")
        return float(np.mean(self.predict(x, weight_transform=weight_transform) == y))

    def copy(self) -> FloatModel:
        """An independent copy (parameters copied)."""
        layers = []
        for layer in self.layers:
            new = _make_layer(layer.kind, _layer_spec(layer))
            for name, value in layer.params.items():
                getattr(new, name)[...] = value
            layers.append(new)
        return FloatModel(layers, self.input_shape, json.loads(json.dumps(self.meta)))


# -- loss and optimizer --------------------------------------------------------------


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy of ``logits`` ``(N, K)`` against labels ``y``.

    Returns
    -------
    loss, grad:
        The mean loss and its gradient wrt ``logits``.
    """
    z = logits - logits.max(axis=1, keepdims=True)
    logsum = np.log(np.exp(z).sum(axis=1, keepdims=True))
    logp = z - logsum
    n = len(y)
    loss = -float(logp[np.arange(n), y].mean())
    grad = np.exp(logp)
    grad[np.arange(n), y] -= 1.0
    return loss, grad / n


def distillation_loss(logits: np.ndarray, teacher_logits: np.ndarray,
                      temperature: float) -> tuple[float, np.ndarray]:
    """``T**2 * KL(softmax(teacher / T) || softmax(logits / T))``, mean over the batch,
    and its gradient wrt ``logits`` (Hinton et al.'s scaling keeps it comparable to
    the hard loss)."""
    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    t = temperature
    log_p = log_softmax(teacher_logits / t)
    log_q = log_softmax(logits / t)
    p = np.exp(log_p)
    n = len(logits)
    loss = float(t * t * np.sum(p * (log_p - log_q)) / n)
    return loss, t * (np.exp(log_q) - p) / n


class Adam:
    """Adam optimizer (Kingma & Ba) updating a list of arrays in place.

    Parameters
    ----------
    params:
        Arrays to update.
    lr, beta1, beta2, eps:
        The usual hyperparameters.
    """

    def __init__(self, params: list[np.ndarray], lr: float = 1e-3, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be > 0, not {lr}")
        self.params = params
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: list[np.ndarray]) -> None:
        """Apply one update with ``grads`` (same order and shapes as ``params``)."""
        for p, d in zip(self.params, self.deltas(grads), strict=True):
            p += d

    def deltas(self, grads: list[np.ndarray]) -> list[np.ndarray]:
        """The changes one update with ``grads`` makes, without applying them (for
        parameters stored another way, e.g. fixed point: ``sw/train/rbnn.py``)."""
        if len(grads) != len(self.params):
            raise ValueError(f"step: got {len(grads)} gradients for {len(self.params)} params")
        self.t += 1
        c1 = 1.0 - self.beta1 ** self.t
        c2 = 1.0 - self.beta2 ** self.t
        out = []
        for g, m, v in zip(grads, self.m, self.v, strict=True):
            m *= self.beta1
            m += (1.0 - self.beta1) * g
            v *= self.beta2
            v += (1.0 - self.beta2) * g * g
            out.append(-self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps))
        return out


# -- training ----------------------------------------------------------------------


def train(model: FloatModel, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int,
          lr: float, seed: int, progress: bool = True,
          weight_transform: TransformLike | None = None, teacher: FloatModel | None = None,
          temperature: float = 3.0, beta: float = 0.9) -> list[float]:
    """Fit ``model`` in place with Adam on softmax cross-entropy.

    Parameters
    ----------
    model:
        The model to train.
    x, y:
        Samples ``(N, *input_shape)`` and integer labels ``(N,)``.
    epochs, batch_size, lr:
        Passes over the data, samples per step, Adam step size.
    seed:
        Seeds the shuffling (``np.random.default_rng(seed)``).
    progress:
        Show a tqdm progress bar.
    weight_transform:
        Optional :class:`WeightTransform` (or plain ``f(index, weight)`` callable, with
        a straight-through backward) for quantization-aware training; its own
        parameters are trained with the model's.
    teacher, temperature, beta:
        Knowledge distillation: with a ``teacher``, the loss is ``beta * T**2 *
        KL(softmax(teacher / T) || softmax(student / T)) + (1 - beta) * CE``.

    Returns
    -------
    list of float
        Mean loss (including the transform's penalty) of each epoch.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    if x.ndim != 1 + len(model.input_shape) or tuple(x.shape[1:]) != model.input_shape:
        raise ValueError(f"x: shape {x.shape} does not match (N, *{model.input_shape})")
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y: needs {len(x)} integer labels, has shape {y.shape} {y.dtype}")
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, not {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    transform = _as_transform(weight_transform)
    extra = transform.params() if transform is not None else []
    opt = Adam(model.params() + extra, lr=lr)
    rng = np.random.default_rng(seed)
    history = []
    bar = tqdm(range(epochs), desc="train", disable=not progress, leave=False)
    for _ in bar:
        order = rng.permutation(len(x))
        total = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            logits = model.forward(x[idx], transform)
            loss, grad = softmax_cross_entropy(logits, y[idx])
            if teacher is not None:
                soft, soft_grad = distillation_loss(logits, teacher.forward(x[idx]),
                                                    temperature)
                loss, grad = beta * soft + (1 - beta) * loss, beta * soft_grad + (1 - beta) * grad
            model.backward(grad, transform)
            grads = model.grads()
            if transform is not None:
                loss += transform.penalty()
                grads += transform.grads()
            opt.step(grads)
            total += loss * len(idx)
        history.append(total / max(len(x), 1))
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    return history


# -- file I/O ----------------------------------------------------------------------


def _layer_spec(layer: FloatLayer) -> dict:
    if layer.kind == "conv3x3":
        return {"in_channels": layer.in_channels, "out_channels": layer.out_channels}
    if layer.kind == "dense":
        return {"in_features": layer.in_features, "out_features": layer.out_features}
    return {}


_KINDS = {"conv3x3": Conv3x3, "dense": Dense, "relu": ReLU, "maxpool2": MaxPool2}


def _make_layer(kind: str, spec: dict) -> FloatLayer:
    return _KINDS[kind](**spec)


def save_float_model(model: FloatModel, path: str | os.PathLike) -> None:
    """Write ``model`` as ``.npz`` (JSON ``header`` + ``layer{i}.weight/bias``).

    The file appears only when complete (temp file + ``os.replace``).
    """
    layers, arrays = [], {}
    for i, layer in enumerate(model.layers):
        layers.append({"kind": layer.kind, **_layer_spec(layer)})
        for name, value in layer.params.items():
            arrays[f"layer{i}.{name}"] = np.asarray(value, dtype=np.float64)
    header = {"format": FLOAT_FORMAT, "version": FLOAT_VERSION,
              "input_shape": list(model.input_shape), "layers": layers, "meta": model.meta}
    arrays["header"] = np.frombuffer(json.dumps(header, indent=1).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_float_model(path: str | os.PathLike) -> FloatModel:
    """Read a float model written by :func:`save_float_model`.

    Raises
    ------
    FloatModelError
        Naming the file and the missing or malformed field.
    """
    path = Path(path)
    npz, member = open_npz(path, FloatModelError, "float model file")
    with npz:
        header = json_header(npz, member, path, FloatModelError)
        if not isinstance(header, dict) or header.get("format") != FLOAT_FORMAT:
            raise FloatModelError(f"{path}: field 'format' must be {FLOAT_FORMAT!r}")
        if header.get("version") != FLOAT_VERSION:
            raise FloatModelError(f"{path}: field 'version' = {header.get('version')!r}; "
                                  f"this reader knows version {FLOAT_VERSION}")
        for field in ("input_shape", "layers"):
            if not isinstance(header.get(field), list):
                raise FloatModelError(f"{path}: field {field!r} is missing or not a list")
        layers = []
        for i, entry in enumerate(header["layers"]):
            kind = entry.get("kind") if isinstance(entry, dict) else None
            if kind not in _KINDS:
                raise FloatModelError(f"{path}: layer {i}: field 'kind' = {kind!r}; allowed: "
                                      f"{', '.join(_KINDS)}")
            spec = {k: v for k, v in entry.items() if k != "kind"}
            try:
                layer = _make_layer(kind, spec)
            except (TypeError, ValueError) as exc:
                raise FloatModelError(f"{path}: layer {i}: bad sizes {spec}: {exc}") from None
            for name, value in layer.params.items():
                key = f"layer{i}.{name}"
                if key not in npz.files:
                    raise FloatModelError(f"{path}: field {key!r} is missing")
                arr = member(key)
                if arr.shape != value.shape or not np.issubdtype(arr.dtype, np.floating):
                    raise FloatModelError(f"{path}: field {key!r} has shape {arr.shape} "
                                          f"{arr.dtype}, expected float {value.shape}")
                value[...] = arr
            layers.append(layer)
        try:
            return FloatModel(layers, tuple(header["input_shape"]), header.get("meta", {}))
        except FloatModelError as exc:
            raise FloatModelError(f"{path}: {exc}") from None
