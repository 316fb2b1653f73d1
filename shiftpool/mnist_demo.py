"""``shiftpool demo --data mnist``: the built-in MNIST models, every scheme, whether
each fits each board's memories, and what the RTL does with them.

For every model and scheme: float, golden (whole test split) and RTL accuracy, the
weights' bits per weight, the memory estimate per board
(:func:`shiftpool.boards.memory_fit.board_memory_fit`), cycles per inference counted
by the RTL (checked against the cycle model) and inferences per second at each
board's build clock (``Board.clock_hz``: the timing target, not a measured Fmax).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from .bench import mac_count, weight_bits
from .boards.memory_fit import BOARD_DEVICES, board_memory_fit
from .boards.registry import BOARDS
from .hw.config import DEFAULT_LANES, DEFAULT_TAPS, POOL_GROUP
from .sim.flow import first_mismatch, simulate
from .sw.compile.fit import fit_config
from .sw.compile.resources import DEVICES
from .sw.schemes import golden
from .sw.schemes.compress import compress
from .sw.train.datasets import load_mnist_split
from .sw.train.mnist import MNIST_MODELS, mnist_float_model

__all__ = ["DEFAULT_POOL_SIZES", "MnistRow", "headline", "rtl_slice", "run_mnist_demo",
           "table"]

#: Pool sizes the demo compresses to.
DEFAULT_POOL_SIZES = (16, 64)
#: Test images the RTL runs unless told to run all: a seeded slice.
DEFAULT_RTL_SAMPLES = 100


@dataclasses.dataclass
class MnistRow:
    """One model compressed with one scheme, on one engine."""

    model: str
    scheme: str                 # flightnn, lightnn2, int8, pool-S
    engine: str
    lanes: int
    taps: int
    float_acc: float
    golden_acc: float           # the whole test split
    rtl_acc: float              # the RTL slice
    rtl_equal: int
    rtl_n: int
    cycles: int                 # counted by the RTL
    cycles_match: bool          # equal to the cycle model
    weights: int
    code_bits: int              # the weights' codes without padding
    macs: int                   # multiply-accumulates per inference
    fits: dict                  # board -> bool
    fit_messages: dict          # board -> one line
    clock_hz: dict              # board -> build clock
    wall: float

    @property
    def bits_per_weight(self) -> float:
        return self.code_bits / self.weights

    def inferences_per_s(self, board: str) -> float:
        return self.clock_hz[board] / self.cycles

    @property
    def macs_per_cycle(self) -> float:
        """Weights the engine consumed per cycle, averaged over the inference."""
        return self.macs / self.cycles

    def weight_bound(self, board: str) -> float | None:
        """Weights per cycle the board's single-port memories can deliver at this
        scheme's bits per weight (iCE40 UltraPlus: 4 SPRAM x 16 bits = 64 bits per
        cycle); None for a board without them."""
        port_bits = DEVICES[BOARD_DEVICES[board]].spram_port_bits
        return port_bits / self.bits_per_weight if port_bits else None


def rtl_slice(n_test: int, samples: int, seed: int) -> np.ndarray:
    """Indices of the test images the RTL runs: ``samples`` of ``n_test`` drawn with
    ``np.random.default_rng(seed)`` (sorted), or all when ``samples`` is 0 or more
    than there are."""
    if samples <= 0 or samples >= n_test:
        return np.arange(n_test)
    return np.sort(np.random.default_rng(seed).choice(n_test, samples, replace=False))


def _variants(pool_sizes):
    yield "flightnn", "flightnn", {}
    yield "lightnn2", "lightnn2", {}
    yield "int8", "int8", {}
    for size in pool_sizes:
        yield f"pool-{size}", "pool", {"pool_size": size}


def run_mnist_demo(models=MNIST_MODELS, lanes: int = DEFAULT_LANES, taps: int = DEFAULT_TAPS,
                   pool_sizes=DEFAULT_POOL_SIZES, rtl_samples: int = DEFAULT_RTL_SAMPLES,
                   simulator: str = "verilator", build_dir=None, seed: int = 0,
                   cache_dir=None, options: dict | None = None, step=print,
                   boards=tuple(BOARDS)) -> tuple[list[MnistRow], np.ndarray]:
    """Compress, fit, simulate every scheme of every MNIST model in ``models``.

    ``options`` are compression options (as :func:`~shiftpool.sw.schemes.compress.
    compress` takes them); the pool engine always has ``POOL_GROUP`` taps. Returns the
    rows and the indices of the test images the RTL ran.
    """
    data = load_mnist_split()
    x_train, y_train, x_test, y_test = data
    picked = rtl_slice(len(x_test), rtl_samples, seed)
    rows = []
    for name in models:
        step(f"MNIST {name}: float model (trained once, then cached)")
        fm = mnist_float_model(name, cache_dir=cache_dir, progress=True, seed=seed, data=data)
        float_acc = fm.accuracy(x_test, y_test)
        for label, scheme, extra in _variants(pool_sizes):
            step(f"MNIST {name}, {label}: compress")
            qm = compress(fm, scheme, x_train=x_train, y_train=y_train, seed=seed,
                          progress=True, **{**(options or {}), **extra})
            config = fit_config(qm, lanes=lanes, taps=POOL_GROUP if scheme == "pool" else taps)
            code_width = config.code_width
            weights, bits = weight_bits(qm, code_width)
            fits = {b: board_memory_fit(b, config) for b in boards}
            xq = qm.quantize_input(x_test)
            step(f"MNIST {name}, {label}: RTL simulation of {len(picked)} test images on "
                 f"{simulator}")
            t0 = time.monotonic()
            result = simulate(qm, xq[picked], config, simulator=simulator,
                              build_dir=build_dir, progress=True, seed=seed)
            wall = time.monotonic() - t0
            mismatch = first_mismatch(qm, xq[picked], result)
            if mismatch:
                step(f"RTL differs from the golden model: {mismatch}")
            golden_acc = float(np.mean(golden.run(qm, xq).argmax(1) == y_test))
            rows.append(MnistRow(
                model=name, scheme=label, engine=config.engine, lanes=config.lanes,
                taps=config.taps, float_acc=float_acc, golden_acc=golden_acc,
                rtl_acc=float(np.mean(result.rtl.argmax(1) == y_test[picked])),
                rtl_equal=int(result.equal.sum()), rtl_n=len(picked),
                cycles=int(result.cycles.max()),
                cycles_match=bool(result.cycles_match),
                weights=weights, code_bits=bits, macs=mac_count(qm),
                fits={b: f.fits for b, f in fits.items()},
                fit_messages={b: f.message for b, f in fits.items()},
                clock_hz={b: BOARDS[b].clock_hz for b in boards}, wall=wall))
    return rows, picked


def table(rows: list[MnistRow], boards=tuple(BOARDS)) -> list[str]:
    """The demo's printed table, then one line per design that does not fit a board."""
    short = {"icebreaker": "iCEB", "ulx3s-85f": "ULX3S", "orangecrab-85f": "OCrab",
             "tangnano9k": "TN9K"}
    fit_head = " ".join(f"{short.get(b, b):>5}" for b in boards)
    head = (f"{'model':<7} {'scheme':<9} {'engine':<12} {'float':>6} {'golden':>6} "
            f"{'RTL':>6} {'RTL==gold':>9} {'b/w':>5} {fit_head} {'cycles/inf':>10} "
            f"{'w/cyc':>5} {'bound':>5} {'inf/s iCEB':>10} {'inf/s ULX3S':>11}")
    lines = [head, "-" * len(head)]
    for r in rows:
        fit = " ".join(f"{'yes' if r.fits[b] else 'no':>5}" for b in boards)
        ips = {b: (f"{r.inferences_per_s(b):.0f}" if b in r.clock_hz else "-")
               for b in ("icebreaker", "ulx3s-85f")}
        bound = r.weight_bound("icebreaker")
        lines.append(
            f"{r.model:<7} {r.scheme:<9} {r.engine + f' {r.lanes}x{r.taps}':<12} "
            f"{r.float_acc:>6.3f} {r.golden_acc:>6.3f} {r.rtl_acc:>6.3f} "
            f"{f'{r.rtl_equal}/{r.rtl_n}':>9} {r.bits_per_weight:>5.2f} {fit} "
            f"{r.cycles:>10} {r.macs_per_cycle:>5.2f} "
            f"{f'{bound:.1f}' if bound else '-':>5} {ips['icebreaker']:>10} "
            f"{ips['ulx3s-85f']:>11}")
    misses = [f"  {r.model} {r.scheme} on {b}: {r.fit_messages[b]}"
              for r in rows for b in boards if not r.fits[b]]
    if misses:
        lines += ["", "does not fit:"] + misses
    return lines


def headline(rows: list[MnistRow], board: str = "icebreaker") -> list[str]:
    """Per model, whether int8 fits ``board`` and which compressed schemes do; when
    int8's weights alone pass all of the device's block memory, no engine size can
    fit it, and the line says so."""
    device = DEVICES[BOARD_DEVICES[board]]
    lines = []
    for model in dict.fromkeys(r.model for r in rows):
        mine = [r for r in rows if r.model == model]
        int8 = next((r for r in mine if r.scheme == "int8"), None)
        fitting = [f"{r.scheme} ({r.bits_per_weight:.2f} b/w, golden {r.golden_acc:.3f})"
                   for r in mine if r.scheme != "int8" and r.fits[board]]
        if int8 is None or int8.fits[board]:
            continue
        why = (f"its {int8.code_bits:,} weight bits are more than all of the "
               f"{device.name}'s block memory ({device.memory_bits:,} bits): no engine size "
               f"fits it" if int8.code_bits > device.memory_bits
               else f"at {int8.lanes}x{int8.taps}: {int8.fit_messages[board]}")
        lines.append(f"{model} on {board}: int8 (golden {int8.golden_acc:.3f}) does not fit, "
                     f"{why}; compressed, it fits as "
                     f"{', '.join(fitting) if fitting else 'none of the schemes run here'}")
    return lines
