"""cocotb test bench for the generated accelerator.

Run through :mod:`shiftpool.sim.runner`, never directly: the runner passes a job
file (``SHIFTPOOL_JOB``): the rows to load into each region, the input words of each
inference, and where to write the results (outputs, cycle counts, and the clock cycle
at which each word crossed a stream, per inference).
The bench drives the load and input streams with random idle gaps and applies random
back-pressure to the output stream (seeded from the job), so the RTL's handshakes are
exercised as they would be by a real link.

Its parts, each a small class: the drivers (:class:`StreamSource`, the load and input
streams), the monitor (:class:`StreamSink`: the output words and the cycle each moved
at) and the checker (:class:`Scoreboard`: each inference against the golden model's
outputs and the cycle model's count, which the job carries; the cocotb test fails on a
difference, so a run of this bench fails by itself). The model is the job's, computed
by the caller from the golden and cycle models (:func:`shiftpool.sim.flow.simulate`).

Two ways to drive the streams (the job's ``mode``):

``"event"`` (the default)
    The clock toggles in the simulator, in the harness the runner builds around the
    design (or in the simulator interface, cocotb's ``Clock(impl="gpi")``, for a
    design built without it), and Python runs only when a stream has something to
    do: one offer per beat, a sleep on ``RisingEdge`` of ``valid`` or ``ready`` (with
    a :class:`~cocotb.triggers.Timer` for the cycle limit) while the accelerator
    computes, one timer per idle gap or stall, however long. The simulator runs free
    in between.
``"cycle"``
    The first bench: Python looks at every stream on every clock cycle. Kept to
    measure what the event bench gains (``shiftpool bench``) and as a second opinion.

Every value is driven just after a falling clock edge, half a period away from the
rising edge the design samples on, and read either in a falling edge's callback (when
nothing was written since the rising edge before it, so every signal has settled) or
in :class:`~cocotb.triggers.ReadOnly` (after a write: a ``ready`` may depend on the
``valid`` and payload just written, and Icarus may show glitches before the end of the
time step).
"""

import json
import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, First, ReadOnly, RisingEdge, Timer

__all__ = ["CLOCK_NS", "BenchTimeout", "Edges", "Scoreboard", "StreamSink", "StreamSource",
           "run_job"]

#: Clock period, ns (``shiftpool.sim.runner.CLOCK_NS``, which the job repeats).
CLOCK_NS = 10
#: Falling edges a sink polls for ``valid`` before it sleeps on the signal's rising
#: edge: a stream that is valid every other cycle costs one callback per cycle so,
#: less than the tasks a sleep with a timeout starts.
POLL_EDGES = 2


class BenchTimeout(AssertionError):
    """The design stopped answering: no handshake within the job's cycle limit."""


def draw_cycles(rng: random.Random, p: float) -> int:
    """Idle (or stall) cycles before the next beat: each further cycle with
    probability ``p``, as if a coin were tossed on every cycle."""
    n = 0
    while p and rng.random() < p:
        n += 1
    return n


class Edges:
    """Waits counted in clock cycles on ``clk``, each resuming just after a falling
    edge (where the bench drives) with as few callbacks as the wait allows."""

    def __init__(self, clk):
        self.clk = clk
        self.falling = FallingEdge(clk)

    @staticmethod
    def now() -> int:
        """The clock cycle now: rising edges so far (edge ``c`` is at ``c`` periods)."""
        return int(get_sim_time("ns")) // CLOCK_NS

    async def skip(self, n: int) -> None:
        """Let ``n`` rising edges pass. One callback for a single cycle; two for more
        (a timer into the high phase before the last falling edge, then that edge),
        so the wait never lands on an edge's own time step, where the order of the
        timer and the edge is up to the simulator."""
        if n > 1:
            await Timer(n * CLOCK_NS - CLOCK_NS // 4, unit="ns")
        if n > 0:
            await self.falling

    async def until_high(self, signal, deadline: int, poll: int = 0,
                         settled: bool = False) -> bool:
        """Return once ``signal`` is high just after a falling edge (in that edge's
        callback, or in :class:`ReadOnly` after a write), or ``False`` at cycle
        ``deadline``.

        Called just after a falling edge: with ``settled`` (nothing written since the
        edge) the value is read at once, else in :class:`ReadOnly`. Checks ``poll``
        falling edges one by one, then sleeps until the signal rises; a rise may be a
        glitch, so the value is checked again after the next falling edge.
        """
        if not settled:
            await ReadOnly()
        while not int(signal.value):
            if poll:
                poll -= 1
                await self.falling
                continue
            left = deadline - self.now()
            if left <= 0:
                return False
            timer = Timer(left * CLOCK_NS, unit="ns")
            if await First(RisingEdge(signal), timer) is timer:
                return False
            await self.falling
        return True


class StreamSource:
    """Drives the stream ``name`` of ``dut`` (``{name}__valid``, ``__payload``,
    ``__ready``) with beats, ``gap``: the chance of one more idle cycle before a beat.

    :meth:`send` starts and ends just after a falling edge. ``valid`` stays high
    between beats without a gap, so a burst costs two callbacks a beat: the
    :class:`ReadOnly` that sees ``ready`` and the falling edge after the transfer.
    """

    def __init__(self, dut, name: str, edges: Edges, rng: random.Random, gap: float,
                 limit: int):
        self.dut, self.name, self.edges = dut, name, edges
        self.rng, self.gap, self.limit = rng, gap, limit
        self.valid = getattr(dut, f"{name}__valid")
        self.payload = getattr(dut, f"{name}__payload")
        self.ready = getattr(dut, f"{name}__ready")

    async def send(self, beats, log: list | None = None) -> int:
        """Send every beat of ``beats``; returns the cycle the last one moved at. With
        ``log``, append ``(offered, moved)`` per beat: the first cycle its ``valid`` was
        high and the cycle it moved at.

        Raises
        ------
        BenchTimeout
            If ``ready`` stays low for the cycle limit while a beat is offered.
        """
        moved = None
        for beat in beats:
            idle = draw_cycles(self.rng, self.gap)
            if idle:
                self.valid.value = 0
                await self.edges.skip(idle)
            self.payload.value = beat
            self.valid.value = 1
            offered = self.edges.now() + 1
            if not await self.edges.until_high(self.ready, self.edges.now() + self.limit):
                raise BenchTimeout(f"{self.name}.ready stayed low for {self.limit} cycles "
                                   f"(busy = {self.dut.busy.value})")
            moved = self.edges.now() + 1
            if log is not None:
                log.append((offered, moved))
            await self.edges.falling
        self.valid.value = 0
        return moved


class StreamSink:
    """Takes words from the accelerator's output stream with back-pressure:
    ``stall``, the chance of one more cycle with ``ready`` low once a word is valid.

    ``ready`` stays high while no stall is drawn, so a word costs one callback per
    cycle (``valid`` and the payload read in the falling edge's callback); a long wait
    (the accelerator computing) is one sleep on ``valid``.
    """

    def __init__(self, dut, edges: Edges, rng: random.Random, stall: float, limit: int,
                 acc_width: int):
        self.dut, self.edges = dut, edges
        self.rng, self.stall, self.limit = rng, stall, limit
        self.decode = WordDecoder(acc_width)

    async def receive(self, count: int) -> tuple[list[int], list[int]]:
        """``count`` words and the cycle each moved at; starts and ends just after a
        falling edge, with ``ready`` low at the end.

        Raises
        ------
        BenchTimeout
            If the words do not all come within the cycle limit.
        AssertionError
            If ``last`` is not set on exactly the final word.
        """
        dut, edges = self.dut, self.edges
        deadline = edges.now() + self.limit
        words, cycles = [], []
        dut.out__ready.value = 1
        while len(words) < count:
            stall = draw_cycles(self.rng, self.stall)
            if stall:
                # The stall begins once the word is valid, so back-pressure meets it.
                dut.out__ready.value = 0
                if not await edges.until_high(dut.out__valid, deadline, POLL_EDGES):
                    self._timeout(len(words), count)
                await edges.skip(stall)
                dut.out__ready.value = 1
            # Nothing was written since the edge unless ready just went high.
            if not await edges.until_high(dut.out__valid, deadline, POLL_EDGES,
                                          settled=bool(words) and not stall):
                self._timeout(len(words), count)
            words.append(self.decode(int(dut.out__payload.value), len(words) + 1, count))
            cycles.append(edges.now() + 1)
            await edges.falling
        dut.out__ready.value = 0
        return words, cycles

    def _timeout(self, got: int, count: int):
        raise BenchTimeout(f"out: only {got} of {count} outputs after {self.limit} cycles "
                           f"(busy = {self.dut.busy.value}, cycles = "
                           f"{self.dut.cycles.value})")


class WordDecoder:
    """Splits an output payload into its signed ``acc_width``-bit word and ``last``."""

    def __init__(self, acc_width: int):
        self.width = acc_width
        self.mask = (1 << acc_width) - 1

    def __call__(self, raw: int, n: int, count: int) -> int:
        """The value of word ``n`` (from 1) of ``count``; checks its ``last`` flag."""
        value = raw & self.mask
        if value >> (self.width - 1):
            value -= 1 << self.width
        last = (raw >> self.width) & 1
        if last != (n == count):
            raise AssertionError(f"out.last = {last} on word {n} of {count}")
        return value


class Scoreboard:
    """Checks each inference as it completes against the job's expectations: the
    golden model's outputs (``expected``, one list per inference) and the cycle
    model's count (``expected_cycles``). A job without them is not checked (a bench
    used to measure rather than to verify). Failures are collected, so the results
    file still holds every inference; :meth:`verdict` then fails the cocotb test.
    """

    #: Failures named in the verdict and kept in the results file.
    SHOWN = 5

    def __init__(self, job: dict):
        self.expected = job.get("expected")
        self.expected_cycles = job.get("expected_cycles")
        self.checked = 0
        self.failures: list[str] = []
        self.failed_inputs: set[int] = set()

    def check(self, n: int, outputs: list[int], cycles: int) -> None:
        """Inference ``n``'s output words and the RTL's cycle count."""
        if self.expected is not None:
            want = self.expected[n]
            wrong = [i for i, (a, b) in enumerate(zip(outputs, want, strict=True)) if a != b]
            if wrong:
                i = wrong[0]
                self._fail(n, f"input {n}: output {i}: RTL {outputs[i]} != golden {want[i]} "
                              f"({len(wrong)} of {len(want)} words differ)")
        if self.expected_cycles is not None and cycles != self.expected_cycles:
            self._fail(n, f"input {n}: {cycles} cycles, the cycle model says "
                          f"{self.expected_cycles}")
        self.checked += 1

    def _fail(self, n: int, text: str) -> None:
        self.failed_inputs.add(n)
        self.failures.append(text)

    def summary(self) -> dict:
        return {"checked": self.checked, "failed_inputs": len(self.failed_inputs),
                "failures": self.failures[:self.SHOWN]}

    def verdict(self) -> None:
        """An AssertionError naming the first failures, if there were any."""
        if self.failures:
            more = len(self.failures) - self.SHOWN
            raise AssertionError(
                f"scoreboard: {len(self.failed_inputs)} of {self.checked} inferences "
                f"disagree with the golden or cycle model: " + "; ".join(
                    self.failures[:self.SHOWN]) + (f"; and {more} more" if more > 0 else ""))


# -- the per-cycle bench (mode "cycle") ---------------------------------------------------

async def _send_per_cycle(dut, stream, payload, rng, gap, limit):
    """Offer one beat on ``stream`` and wait until it is accepted (at most ``limit``
    cycles), looking at ``ready`` on every cycle; returns the cycle it was offered in."""
    while gap and rng.random() < gap:
        getattr(dut, f"{stream}__valid").value = 0
        await FallingEdge(dut.clk)
    getattr(dut, f"{stream}__payload").value = payload
    getattr(dut, f"{stream}__valid").value = 1
    offered = Edges.now() + 1
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
    return offered


class PerCycleSource:
    """:class:`StreamSource`'s interface over the per-cycle bench's handshake."""

    def __init__(self, dut, name, edges, rng, gap, limit):
        self.dut, self.name, self.rng, self.gap, self.limit = dut, name, rng, gap, limit

    async def send(self, beats, log: list | None = None) -> int:
        moved = None
        for beat in beats:
            offered = await _send_per_cycle(self.dut, self.name, beat, self.rng, self.gap,
                                            self.limit)
            moved = Edges.now()
            if log is not None:
                log.append((offered, moved))
        return moved


class PerCycleSink:
    """:class:`StreamSink`'s interface, looking at the stream on every cycle, with a
    fresh chance of ``ready`` low on each."""

    def __init__(self, dut, edges, rng, stall, limit, acc_width):
        self.dut, self.rng, self.stall, self.limit = dut, rng, stall, limit
        self.decode = WordDecoder(acc_width)

    async def receive(self, count: int) -> tuple[list[int], list[int]]:
        dut = self.dut
        words, cycles = [], []
        for _ in range(self.limit):
            if len(words) == count:
                break
            ready = 0 if (self.stall and self.rng.random() < self.stall) else 1
            dut.out__ready.value = ready
            await ReadOnly()
            if ready and int(dut.out__valid.value):
                words.append(self.decode(int(dut.out__payload.value), len(words) + 1, count))
                cycles.append(Edges.now() + 1)
            await RisingEdge(dut.clk)
            await FallingEdge(dut.clk)
        if len(words) < count:
            raise BenchTimeout(f"out: only {len(words)} of {count} outputs after "
                               f"{self.limit} cycles (busy = {dut.busy.value}, cycles = "
                               f"{dut.cycles.value})")
        dut.out__ready.value = 0
        return words, cycles


#: mode -> (source class, sink class).
MODES = {"event": (StreamSource, StreamSink), "cycle": (PerCycleSource, PerCycleSink)}


# -- the job --------------------------------------------------------------------------

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


def _start_clock(dut, clock: str) -> None:
    """Start ``dut.clk`` as the job's ``clock`` says: ``"hdl"``: the harness toggles
    it already; ``"gpi"``: cocotb's clock in the simulator interface, no Python per
    edge (a netlist without the harness); ``"cocotb"``: cocotb's default, as the first
    bench had it ("py" on Icarus, "gpi" on Verilator, whose runner trusts inertial
    writes)."""
    if clock == "gpi":
        Clock(dut.clk, CLOCK_NS, unit="ns", impl="gpi").start()
    elif clock == "cocotb":
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
    elif clock != "hdl":
        raise ValueError(f"unknown clock {clock!r}")


class _Progress:
    """The count of finished inferences, written to ``path`` (atomically) at most
    every ``every`` seconds and at the end, for the runner's progress bar."""

    def __init__(self, path: str | None, every: float = 0.2):
        self.path, self.every, self.last = path, every, 0.0

    def __call__(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.path or (not final and now - self.last < self.every):
            return
        self.last = now
        with open(self.path + ".tmp", "w") as f:
            f.write(str(done))
        os.replace(self.path + ".tmp", self.path)


async def run_job(dut, job) -> tuple[dict, Scoreboard]:
    """Load the image, run every input, each checked by the :class:`Scoreboard` as it
    completes; returns the results and the scoreboard. The results: ``outputs`` and
    ``cycles`` (the RTL's counter) per inference, ``in_cycles`` (the cycle its last
    input word moved at) and ``out_cycles`` (each output word's) per inference, the
    inference phase's simulated ``sim_cycles``, its ``wall`` seconds and ``cpu``
    seconds (the simulator's process: simulator and Python together), ``clock_ns``."""
    mode = job.get("mode", "event")
    rng = random.Random(job["seed"])
    gap, stall = job.get("idle_gap", 0.0), job.get("back_pressure", 0.0)
    limit = job["cycle_limit"]
    source_cls, sink_cls = MODES[mode]
    if job["clock_ns"] != CLOCK_NS:
        raise ValueError(f"the job's clock period {job['clock_ns']} ns is not the "
                         f"bench's {CLOCK_NS} ns")
    _start_clock(dut, job["clock"])
    await _reset(dut)
    edges = Edges(dut.clk)
    load = source_cls(dut, "load", edges, rng, gap, limit)
    inp = source_cls(dut, "inp", edges, rng, gap, limit)
    out = sink_cls(dut, edges, rng, stall, limit, job["acc_width"])
    # region | addr | data, at the offsets of the accelerator's load layout
    addr_shift, data_shift = job["load_shifts"]["addr"], job["load_shifts"]["data"]
    # The pool region (the last) is logged: each of its rows builds a table column.
    pool_rows: list = []
    for code, rows in enumerate(job["regions"]):
        await load.send((code | addr << addr_shift | int(row, 16) << data_shift
                         for addr, row in enumerate(rows)),
                        log=pool_rows if code == job.get("pool_region") else None)
    res = {"outputs": [], "cycles": [], "in_cycles": [], "out_cycles": [],
           "pool_rows": pool_rows}
    scoreboard = Scoreboard(job)
    progress = _Progress(job.get("progress_file"))
    start, t0, cpu0 = Edges.now(), time.perf_counter(), time.process_time()
    last_bit = 1 << job["last_shift"]
    for n, words in enumerate(job["inputs"]):
        res["in_cycles"].append(await inp.send(
            w | (last_bit if i == len(words) - 1 else 0) for i, w in enumerate(words)))
        outputs, cycles = await out.receive(job["outputs"])
        res["outputs"].append(outputs)
        res["out_cycles"].append(cycles)
        # Read in the falling edge's callback: the counter stopped with the inference.
        res["cycles"].append(int(dut.cycles.value))
        scoreboard.check(n, outputs, res["cycles"][-1])
        progress(n + 1)
    res.update(sim_cycles=Edges.now() - start, wall=time.perf_counter() - t0,
               cpu=time.process_time() - cpu0, clock_ns=CLOCK_NS,
               scoreboard=scoreboard.summary())
    progress(len(job["inputs"]), final=True)
    return res, scoreboard


@cocotb.test()
async def accelerator_job(dut):
    """Run the job named by ``SHIFTPOOL_JOB`` and write its results file; the test
    fails if the scoreboard found an inference that disagrees with the golden or the
    cycle model (after the results are written, so they can be looked at)."""
    with open(os.environ["SHIFTPOOL_JOB"]) as f:
        job = json.load(f)
    results, scoreboard = await run_job(dut, job)
    tmp = job["results"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f)
    os.replace(tmp, job["results"])
    scoreboard.verdict()
