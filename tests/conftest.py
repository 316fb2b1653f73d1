"""Shared fixtures: the built-in digits models (trained once per session) and one
simulator build folder per test run, so each configuration is compiled once."""

from __future__ import annotations

import os

import pytest


def pytest_report_header(config):
    from shiftpool.sim.kit import SEED_ENV, seed_offset

    return (f"{SEED_ENV} = {seed_offset()}: randomized tests' seeds are shifted by it "
            f"(set {SEED_ENV}=K to run fresh cases)")


@pytest.fixture(scope="session")
def sim_build_dir(tmp_path_factory):
    """Where cocotb builds are cached for the whole test run. pytest-xdist's workers
    share it (each has its own temporary folder below the run's): builds are locked
    (``shiftpool.sim.runner.build_lock``), so each design is compiled once."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    where = root / "sim-build"
    where.mkdir(exist_ok=True)
    return where


@pytest.fixture(scope="session")
def digits_cache(tmp_path_factory):
    """A private cache for the trained float model (the user's cache is not touched)."""
    return tmp_path_factory.mktemp("digits-cache")


@pytest.fixture(scope="session")
def digits_data():
    from shiftpool.sw.train.datasets import load_digits_split

    return load_digits_split()


@pytest.fixture(scope="session")
def digits_float(digits_cache):
    from shiftpool.sw.train.digits import digits_float_model

    return digits_float_model(cache_dir=digits_cache, progress=False)


@pytest.fixture(scope="session")
def digits_models(digits_float, digits_data):
    """The demo's three compressed models: scheme name -> QuantModel."""
    from shiftpool.sw.schemes.compress import compress

    x_train, y_train, x_test, y_test = digits_data
    return {scheme: compress(digits_float, scheme, x_train=x_train, y_train=y_train,
                             x_test=x_test, y_test=y_test, progress=False)
            for scheme in ("flightnn", "lightnn2", "int8")}


@pytest.fixture(scope="session")
def digits_pool_models(digits_float, digits_data):
    """The digits model compressed to weight pools: pool size S -> QuantModel."""
    from shiftpool.sw.schemes.compress import compress

    x_train, y_train, x_test, y_test = digits_data
    return {size: compress(digits_float, "pool", x_train=x_train, y_train=y_train,
                           x_test=x_test, y_test=y_test, progress=False, pool_size=size)
            for size in (16, 64, 128)}
