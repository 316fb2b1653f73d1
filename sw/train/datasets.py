"""Data sets used to train and check the built-in models."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

__all__ = ["load_digits_split"]


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
