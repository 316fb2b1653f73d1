"""The built-in MNIST models, trained on :func:`~.datasets.load_mnist_split`.

* ``mlp100``: dense 784-100-10, the size of the RBNN paper's MLP (79,400 weights:
  635 kbit as int8, which fits the iCEBreaker's 1 Mbit of SPRAM);
* ``mlp192``: dense 784-192-10 (152,448 weights: 1.22 Mbit as int8, more than the
  iCEBreaker's four SPRAMs hold, while its FLightNN form with 4-bit codes fits them
  as long as more than about 28% of its hidden filters keep k=1: at k=1 share 0.75, about
  5 bits per weight, it takes 3 SPRAMs at 2 x 2; fine-tuning may push it to k=2);
* ``cnn``: maxpool2 (28 -> 14), conv3x3(1->8) + ReLU, maxpool2, conv3x3(8->16) + ReLU,
  maxpool2, dense(144->10). It pools first so that the largest feature map (8 x 14 x
  14 = 1568 activations) stays small.

Models are cached as the digits model is (:func:`~.digits.cache_dir_default`); the
file name carries :data:`RECIPE_VERSION`, so a changed recipe retrains.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .datasets import load_mnist_split
from .digits import cache_dir_default
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

__all__ = ["MNIST_MODELS", "RECIPE_VERSION", "RECIPES", "mnist_architecture",
           "mnist_float_model"]

#: Bump when an architecture or a training recipe changes.
RECIPE_VERSION = "v1"
#: Training hyperparameters per built-in model.
RECIPES = {
    "mlp100": {"epochs": 15, "batch_size": 64, "lr": 1e-3},
    "mlp192": {"epochs": 15, "batch_size": 64, "lr": 1e-3},
    "cnn": {"epochs": 6, "batch_size": 32, "lr": 3e-3},
}
#: The built-in MNIST model names.
MNIST_MODELS = tuple(RECIPES)


def mnist_architecture(name: str, seed: int = 0) -> FloatModel:
    """The untrained MNIST model ``name``, He-initialized from
    ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    if name in ("mlp100", "mlp192"):
        hidden = int(name[3:])
        layers = [Dense(28 * 28, hidden, rng), ReLU(), Dense(hidden, 10, rng)]
    elif name == "cnn":
        layers = [MaxPool2(),
                  Conv3x3(1, 8, rng), ReLU(), MaxPool2(),
                  Conv3x3(8, 16, rng), ReLU(), MaxPool2(),
                  Dense(16 * 3 * 3, 10, rng)]
    else:
        raise ValueError(f"unknown MNIST model {name!r}; choose one of "
                         f"{', '.join(MNIST_MODELS)}")
    return FloatModel(layers, input_shape=(1, 28, 28))


def mnist_float_model(name: str, cache_dir: str | os.PathLike | None = None,
                      progress: bool = True, seed: int = 0, data=None) -> FloatModel:
    """Train the MNIST model ``name`` (one of :data:`MNIST_MODELS`), or load it from
    the cache.

    Parameters
    ----------
    cache_dir:
        Where the trained model is kept; :func:`~.digits.cache_dir_default` when
        omitted.
    progress:
        Show a progress bar while training.
    seed:
        Seeds initialization and shuffling; training is deterministic given it.
    data:
        The split, if the caller has loaded it (:func:`~.datasets.load_mnist_split`).

    Returns
    -------
    FloatModel
        With ``meta`` holding the recipe and the float test accuracy.
    """
    model = mnist_architecture(name, seed)
    recipe = RECIPES[name]
    directory = Path(cache_dir) if cache_dir is not None else cache_dir_default()
    path = directory / f"mnist-{name}-float-{RECIPE_VERSION}-seed{int(seed)}.npz"
    if path.exists():
        try:
            return load_float_model(path)
        except FloatModelError:
            pass  # a damaged cache entry is derived data: retrain and overwrite it
    x_train, y_train, x_test, y_test = data if data is not None else load_mnist_split()
    train(model, x_train, y_train, seed=seed, progress=progress, **recipe)
    model.meta = {"name": f"mnist-{name}", "recipe_version": RECIPE_VERSION,
                  "seed": int(seed), **recipe,
                  "test_accuracy": model.accuracy(x_test, y_test)}
    save_float_model(model, path)
    return model
