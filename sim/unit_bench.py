"""cocotb bench of one unit (``sim/units.py``): the job named by ``SHIFTPOOL_UNIT_JOB``.

Per cycle, after the falling edge, the source offers its next payload (after seeded
idle cycles) and the sink draws ``ready`` (low with probability ``stall``); a transfer
is seen in ``ReadOnly`` before the rising edge. The cycle numbers are rising edges
since reset.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

CLOCK_NS = 10


@cocotb.test()
async def unit_job(dut):
    with open(os.environ["SHIFTPOOL_UNIT_JOB"]) as f:
        job = json.load(f)
    rng = random.Random(job["seed"])
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.rst.value = 1
    for name in ("load", "i"):
        getattr(dut, f"{name}__valid").value = 0
    dut.o__ready.value = 0
    for _ in range(3):
        await FallingEdge(dut.clk)
    dut.rst.value = 0
    for word in job["load"]:          # the load stream is always ready
        dut.load__payload.value = int(word, 16)
        dut.load__valid.value = 1
        await FallingEdge(dut.clk)
    dut.load__valid.value = 0

    inputs = [int(v, 16) for v in job["inputs"]]
    sent, outputs, in_cycles, out_cycles = 0, [], [], []
    cycle, offering = 0, False
    while len(outputs) < job["count"] or sent < len(inputs):
        if cycle > job["limit"]:
            raise AssertionError(f"timeout: {sent} of {len(inputs)} inputs sent, "
                                 f"{len(outputs)} of {job['count']} outputs after {cycle} "
                                 f"cycles")
        if not offering and sent < len(inputs) and not (job["idle"] and
                                                        rng.random() < job["idle"]):
            dut.i__payload.value = inputs[sent]
            offering = True
        dut.i__valid.value = int(offering)
        ready = not (job["stall"] and rng.random() < job["stall"])
        dut.o__ready.value = int(ready)
        await ReadOnly()
        if offering and int(dut.i__ready.value):
            in_cycles.append(cycle)
            sent += 1
            offering = False
        if ready and int(dut.o__valid.value):
            outputs.append(hex(int(dut.o__payload.value)))
            out_cycles.append(cycle)
        await RisingEdge(dut.clk)
        cycle += 1
        await FallingEdge(dut.clk)
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    for _ in range(4):                # nothing more comes out
        await FallingEdge(dut.clk)
        if int(dut.o__valid.value):
            raise AssertionError("an output word too many")
    tmp = job["results"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"outputs": outputs, "in_cycles": in_cycles, "out_cycles": out_cycles}, f)
    os.replace(tmp, job["results"])
