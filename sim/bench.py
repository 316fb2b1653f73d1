"""cocotb test bench for the generated accelerator.

Run through :mod:`shiftpool.sim.runner`, never directly: the runner passes a job
file (``SHIFTPOOL_JOB``): the rows to load into each region, the input words of each
inference, and where to write the results (outputs and cycle counts per inference).
The bench drives the load and input streams with random idle gaps and applies random
back-pressure to the output stream (seeded from the job), so the RTL's handshakes are
exercised as they would be by a real link.
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

__all__ = ["run_job"]


async def _reset(dut):
    dut.rst.value = 1
    dut.load__valid.value = 0
    dut.inp__valid.value = 0
    dut.out__ready.value = 0
    # No readback here: the port idles (an undriven request is X, which a netlist
    # propagates into the ready of the input stream).
    dut.readback__req__valid.value = 0
    dut.readback__req__payload.value = 0
    dut.readback__resp__ready.value = 0
    for _ in range(3):
        await FallingEdge(dut.clk)
    dut.rst.value = 0


class BenchTimeout(AssertionError):
    """The design stopped answering: no handshake within the job's cycle limit."""


async def _send(dut, stream, payload, rng, gap, limit):
    """Offer one beat on ``stream`` and wait until it is accepted (at most ``limit``
    cycles)."""
    while gap and rng.random() < gap:
        getattr(dut, f"{stream}__valid").value = 0
        await FallingEdge(dut.clk)
    getattr(dut, f"{stream}__payload").value = payload
    getattr(dut, f"{stream}__valid").value = 1
    for _ in range(limit):
        # The transfer happens at the rising edge if ready is high just before it.
        await ReadOnly()
        accepted = int(getattr(dut, f"{stream}__ready").value)
        await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        if accepted:
            break
    else:
        raise BenchTimeout(f"{stream}.ready stayed low for {limit} cycles (busy = "
                           f"{dut.busy.value})")
    getattr(dut, f"{stream}__valid").value = 0


async def _receive(dut, count, acc_width, rng, stall, limit):
    """Collect ``count`` output words, with random back-pressure; at most ``limit``
    cycles."""
    words = []
    mask = (1 << acc_width) - 1
    for _ in range(limit):
        if len(words) == count:
            break
        ready = 0 if (stall and rng.random() < stall) else 1
        dut.out__ready.value = ready
        await ReadOnly()
        if ready and int(dut.out__valid.value):
            raw = int(dut.out__payload.value)
            value = raw & mask
            if value >> (acc_width - 1):
                value -= 1 << acc_width
            last = (raw >> acc_width) & 1
            words.append(value)
            if last != (len(words) == count):
                raise AssertionError(f"out.last = {last} on word {len(words)} of {count}")
        await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
    if len(words) < count:
        raise BenchTimeout(f"only {len(words)} of {count} outputs after {limit} cycles "
                           f"(busy = {dut.busy.value}, cycles = {dut.cycles.value})")
    dut.out__ready.value = 0
    return words


async def run_job(dut, job):
    """Load the image, run every input, return ``(outputs, cycles)``."""
    rng = random.Random(job["seed"])
    gap, stall = job.get("idle_gap", 0.0), job.get("back_pressure", 0.0)
    limit = job["cycle_limit"]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    await _reset(dut)
    addr_shift = job["region_bits"]
    data_shift = addr_shift + job["addr_bits"]
    for code, rows in enumerate(job["regions"]):
        for addr, row in enumerate(rows):
            await _send(dut, "load", code | addr << addr_shift | int(row, 16) << data_shift,
                        rng, gap, limit)
    outputs, cycles = [], []
    for n, words in enumerate(job["inputs"]):
        for i, w in enumerate(words):
            last = int(i == len(words) - 1)
            await _send(dut, "inp", w | last << job["act_bits"], rng, gap, limit)
        outputs.append(await _receive(dut, job["outputs"], job["acc_width"], rng, stall,
                                      limit))
        await ReadOnly()
        cycles.append(int(dut.cycles.value))
        await FallingEdge(dut.clk)
        if job.get("progress_file"):
            tmp = job["progress_file"] + ".tmp"
            with open(tmp, "w") as f:
                f.write(str(n + 1))
            os.replace(tmp, job["progress_file"])
    return outputs, cycles


@cocotb.test()
async def accelerator_job(dut):
    """Run the job named by ``SHIFTPOOL_JOB`` and write its results file."""
    with open(os.environ["SHIFTPOOL_JOB"]) as f:
        job = json.load(f)
    outputs, cycles = await run_job(dut, job)
    tmp = job["results"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"outputs": outputs, "cycles": cycles}, f)
    os.replace(tmp, job["results"])
