"""Shared fixtures: the built-in digits models (trained once per session), one
simulator build folder per test run, so each configuration is compiled once, and one
real iCE40 build of a small design (``ice40_build``: the board tests and the explore
sweep's logic read it; it is placed and routed once per test run)."""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
from pathlib import Path

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


def small_model(seed: int = 5):
    """A small random model whose design builds quickly (the link dominates it)."""
    import numpy as np
    from shiftpool.sw.model.randmodel import random_model

    rng = np.random.default_rng(seed)
    return random_model(rng, scheme="flightnn", act_bits=4, exp_bits=2, input_shape=(1, 4, 4),
                        convs=(2,), pool=False, dense=(3,))


#: ``PATH`` without the user's folders: only what the venv holds can be found then.
SYSTEM_PATH = "/usr/bin:/bin"


#: The candidates of the build below: 65x1 cannot be laid out (the controller allows 64
#: lanes), 1x2 fits.
FIT_SIZES = "1x2,65x1"


@pytest.fixture(scope="session")
def ice40_build(tmp_path_factory):
    """``shiftpool build --fit --fit-sizes 1x2,65x1`` of the small design for the
    iCEBreaker at 16 MHz (the UART link alone keeps the UP5K's design clock near 20
    MHz): 1x2 is chosen; synthesis, place and route, icepack. It runs as the README
    runs it, the venv's ``shiftpool`` without activating the venv, with ``PATH``
    reduced to the system folders, so the YoWASP tools must be found in the venv.
    Built once per test run: the pytest-xdist workers that use it share it (under a
    lock, as they share ``sim_build_dir``). Returns (the finished process, output
    folder, model)."""
    from shiftpool.sim.runner import build_lock
    from shiftpool.sw.model.file import save_model

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    where = root / "ice40-build"
    model = small_model()
    with build_lock(where):
        done = where / "process.json"
        if not done.exists():
            where.mkdir(exist_ok=True)
            save_model(model, where / "small.npz")
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("YOSYS", "NEXTPNR", "ICE"))}
            env["PATH"] = SYSTEM_PATH
            shiftpool = Path(sysconfig.get_path("scripts")) / "shiftpool"
            proc = subprocess.run([str(shiftpool), "build", "--board", "icebreaker",
                                   str(where / "small.npz"), "-o", str(where / "out"), "--fit",
                                   "--fit-sizes", FIT_SIZES, "--clock-mhz", "16"],
                                  env=env, capture_output=True, text=True, timeout=1800)
            done.write_text(json.dumps({"args": proc.args, "returncode": proc.returncode,
                                        "stdout": proc.stdout, "stderr": proc.stderr}))
    proc = subprocess.CompletedProcess(**json.loads(done.read_text()))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc, where / "out", model
