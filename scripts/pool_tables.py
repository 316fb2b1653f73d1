"""Figures of the pool engine's two table organisations (README, "Half tables").

    .venv/bin/python scripts/pool_tables.py synth ORG S LANES LUT_BITS
        the engine alone for the iCE40UP5K: yosys ``synth_ice40 -device u -spram -dsp``,
        then ``stat``; prints entries per lane and SB_LUT4 / SB_RAM40_4K / SB_SPRAM256KA.
    .venv/bin/python scripts/pool_tables.py accuracy S LUT_BITS [SEED]
        the digits model compressed to a pool of S vectors with both organisations at
        LUT_BITS; prints the table shift and the golden model's test accuracy at 8, 5,
        4 and 3 bits.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import numpy as np


class _UltraPlus:
    """The one thing the engine asks of a platform: its device."""

    device = "iCE40UP5K"


def synth(org: str, size: int, lanes: int, lut_bits: int) -> None:
    from amaranth.back import rtlil
    from shiftpool.boards.tools import run_tool
    from shiftpool.hw.config import AcceleratorConfig
    from shiftpool.hw.engines.pool import PoolLookupEngine
    from shiftpool.hw.memories import DROP_INIT

    cfg = AcceleratorConfig(engine="pool", lanes=lanes, pool_size=size, lut_bits=lut_bits,
                            pool_table=org)
    engine = PoolLookupEngine(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        # RTLIL: yosys reads a 16K-entry table's Verilog initialization very slowly
        (where / "pool.il").write_text(rtlil.convert(engine, name="pool_engine",
                                                     platform=_UltraPlus()))
        proc = run_tool("yosys", ["-q", "-p", f"read_rtlil pool.il; {DROP_INIT}; synth_ice40 "
                                  "-device u -spram -dsp -top pool_engine; tee -o stat.txt "
                                  "stat"], where)
        if proc.returncode:
            raise SystemExit(f"yosys failed: {proc.stderr[-500:]}")
        stat = (where / "stat.txt").read_text()
    cells = {name: int(n) for n, name in re.findall(r"(\d+)\s+(SB_\w+)", stat)}
    print(f"{org} S={size} lanes={lanes} lut_bits={lut_bits}: entries/lane {engine.lut_depth}, "
          f"LUT4 {cells.get('SB_LUT4', 0)}, EBR {cells.get('SB_RAM40_4K', 0)}, "
          f"SPRAM {cells.get('SB_SPRAM256KA', 0)}")


def accuracy(size: int, lut_bits: int, seed: int) -> None:
    from shiftpool.sw.schemes import golden, pool_golden
    from shiftpool.sw.schemes.compress import compress
    from shiftpool.sw.train.datasets import load_digits_split
    from shiftpool.sw.train.digits import digits_float_model

    float_model = digits_float_model(progress=False)
    x_train, y_train, x_test, y_test = load_digits_split()
    for org in ("full", "half"):
        qm = compress(float_model, "pool", x_train=x_train, y_train=y_train, x_test=x_test,
                      y_test=y_test, progress=False, pool_size=size, lut_bits=lut_bits,
                      pool_table=org, seed=seed)
        x = qm.quantize_input(x_test)
        acc = {b: float(np.mean(golden.run(qm, x, bits=b).argmax(1) == y_test))
               for b in (8, 5, 4, 3)}
        print(f"S={size} lut_bits={lut_bits} seed={seed} {org}: shift "
              f"{pool_golden.model_lut(qm)[1]}, " + ", ".join(f"{b} bits {a:.4f}"
                                                             for b, a in acc.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("synth")
    p.add_argument("org", choices=("full", "half"))
    for name in ("size", "lanes", "lut_bits"):
        p.add_argument(name, type=int)
    p = sub.add_parser("accuracy")
    p.add_argument("size", type=int)
    p.add_argument("lut_bits", type=int)
    p.add_argument("seed", type=int, nargs="?", default=0)
    args = parser.parse_args()
    if args.what == "synth":
        synth(args.org, args.size, args.lanes, args.lut_bits)
    else:
        accuracy(args.size, args.lut_bits, args.seed)


if __name__ == "__main__":
    main()
