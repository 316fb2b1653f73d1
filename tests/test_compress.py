"""Compression of the built-in digits model: the accuracy bar and the k mix."""

from __future__ import annotations

import numpy as np
import pytest
from shiftpool.sw.schemes.compress import compress, evaluate


def test_flightnn_within_one_point_of_float(digits_models, digits_float, digits_data):
    _, _, x_test, y_test = digits_data
    float_acc = digits_float.accuracy(x_test, y_test)
    acc = evaluate(digits_models["flightnn"], x_test, y_test)
    assert acc >= float_acc - 0.01, f"FLightNN {acc:.4f} vs float {float_acc:.4f}"


@pytest.mark.parametrize("scheme", ["lightnn2", "int8"])
def test_baselines_within_one_point_of_float(scheme, digits_models, digits_float, digits_data):
    _, _, x_test, y_test = digits_data
    float_acc = digits_float.accuracy(x_test, y_test)
    acc = evaluate(digits_models[scheme], x_test, y_test)
    assert acc >= float_acc - 0.01, f"{scheme} {acc:.4f} vs float {float_acc:.4f}"


def test_k_per_filter(digits_models):
    flight, light = digits_models["flightnn"], digits_models["lightnn2"]
    share = flight.meta["k1_share"]
    assert 0.5 < share < 1.0, f"k=1 share {share}: the penalty should leave a mix"
    for layer in light.layers:
        if layer.is_mac:
            assert (layer.k == 2).all()
    for layer in flight.layers:
        if layer.is_mac:
            one = layer.k == 1
            # A k=1 filter has no second term; the recorded share is the real one.
            assert not np.any(layer.terms[1][one])
    k = np.concatenate([layer.k for layer in flight.layers if layer.is_mac])
    assert np.isclose(np.mean(k == 1), share)


def test_larger_penalty_gives_more_k1_filters(digits_float, digits_data):
    x_train, y_train, _, _ = digits_data
    shares = [compress(digits_float, "flightnn", x_train=x_train, y_train=y_train,
                       k1_target=0.5, lam=lam, epochs=3, progress=False).meta["k1_share"]
              for lam in (0.0, 0.05)]
    assert shares[1] > shares[0], shares
