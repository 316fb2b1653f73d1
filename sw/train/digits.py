"""The built-in digits models on scikit-learn's 8x8 digits: a small CNN, and an MLP.

The CNN: conv3x3(1->8) + ReLU, maxpool2, conv3x3(8->16) + ReLU, maxpool2,
dense(64->10); its largest dot product is 8*3*3 = 72 taps. The MLP (``mlp100``):
dense(64->100) + ReLU, dense(100->10). The trained model is
cached; the file name carries :data:`RECIPE_VERSION`, so a changed recipe retrains.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .datasets import load_digits_split
from .nn import (
    Conv3x3,
    Dense,
    FloatModel,
    FloatModelError,
    MaxPool2,
    ReLU,
    load_float_model,
    save_float_model,
    train,
)

__all__ = ["DIGITS_MODELS", "RECIPE_VERSION", "RECIPE", "cache_dir_default",
           "digits_architecture", "digits_float_model"]

#: Bump when the architecture or the training recipe changes.
RECIPE_VERSION = "v1"
#: The built-in digits models.
DIGITS_MODELS = ("cnn", "mlp100")
#: Training hyperparameters of the built-in models.
RECIPE = {"epochs": 30, "batch_size": 32, "lr": 3e-3}


def cache_dir_default() -> Path:
    """``$SHIFTPOOL_CACHE``, else ``$XDG_CACHE_HOME/shiftpool``, else
    ``~/.cache/shiftpool``."""
    if os.environ.get("SHIFTPOOL_CACHE"):
        return Path(os.environ["SHIFTPOOL_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "shiftpool"
    return Path.home() / ".cache" / "shiftpool"


def digits_architecture(seed: int = 0, name: str = "cnn") -> FloatModel:
    """The untrained digits model ``name`` (one of :data:`DIGITS_MODELS`: the CNN, or
    ``mlp100``, dense 64-100-10, the MLP the RBNN scheme trains from),
    He-initialized from ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    if name == "mlp100":
        return FloatModel([Dense(64, 100, rng), ReLU(), Dense(100, 10, rng)],
                          input_shape=(1, 8, 8))
    if name != "cnn":
        raise ValueError(f"unknown digits model {name!r}; choose one of "
                         f"{', '.join(DIGITS_MODELS)}")
    return FloatModel([
        Conv3x3(1, 8, rng), ReLU(), MaxPool2(),
        Conv3x3(8, 16, rng), ReLU(), MaxPool2(),
        Dense(16 * 2 * 2, 10, rng),
    ], input_shape=(1, 8, 8))


def digits_float_model(cache_dir: str | os.PathLike | None = None, progress: bool = True,
                       seed: int = 0, name: str = "cnn") -> FloatModel:
    """Train the digits model ``name`` (:func:`digits_architecture`), or load it from
    the cache.

    Parameters
    ----------
    cache_dir:
        Where the trained model is kept; :func:`cache_dir_default` when omitted.
    progress:
        Show a progress bar while training.
    seed:
        Seeds initialization and shuffling; training is deterministic given it.

    Returns
    -------
    FloatModel
        With ``meta`` holding the recipe and the float test accuracy.
    """
    directory = Path(cache_dir) if cache_dir is not None else cache_dir_default()
    kind = "" if name == "cnn" else f"{name}-"
    path = directory / f"digits-{kind}float-{RECIPE_VERSION}-seed{int(seed)}.npz"
    if path.exists():
        try:
            return load_float_model(path)
        except FloatModelError:
            pass  # a damaged cache entry is derived data: retrain and overwrite it
    x_train, y_train, x_test, y_test = load_digits_split()
    model = digits_architecture(seed, name)
    train(model, x_train, y_train, seed=seed, progress=progress, **RECIPE)
    model.meta = {"name": "digits" if name == "cnn" else f"digits-{name}",
                  "recipe_version": RECIPE_VERSION, "seed": int(seed), **RECIPE,
                  "test_accuracy": model.accuracy(x_test, y_test)}
    save_float_model(model, path)
    return model
