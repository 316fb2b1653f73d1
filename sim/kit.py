"""The verification kit for tests in Amaranth's simulator, written once: a stream
source with seeded idle gaps, a sink with seeded back-pressure, a timing monitor (the
cycle each word moved), a watchdog, and the seeds every randomized test uses.

Every stream test runs with idle cycles on its source and back-pressure on its sink
(STYLE.md), so these take a ``numpy.random.Generator`` and a probability each. A
source offers one payload at a time and waits for ``ready``; a sink takes a word in a
cycle where it holds ``ready`` high and ``valid`` is high.

Seeds: :func:`seeds` is what randomized tests parametrize over; ``SHIFTPOOL_SEED=K``
shifts every range by ``K`` so that a run explores fresh cases, and pytest prints the
offset in its header (tests/conftest.py), so a failing case names its seed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

__all__ = ["SEED_ENV", "seed_offset", "seeds", "stream_get", "stream_monitor", "stream_put",
           "watchdog"]

#: The environment variable that shifts every test seed.
SEED_ENV = "SHIFTPOOL_SEED"


def seed_offset() -> int:
    """``$SHIFTPOOL_SEED`` as an integer (0 if unset)."""
    text = os.environ.get(SEED_ENV, "").strip()
    try:
        return int(text or 0)
    except ValueError:
        raise ValueError(f"${SEED_ENV} = {text!r} must be an integer seed offset") from None


def seeds(count: int, start: int = 0) -> range:
    """``count`` consecutive seeds from ``start``, shifted by :func:`seed_offset`."""
    first = start + seed_offset()
    return range(first, first + count)


async def stream_put(ctx, stream, payloads: Iterable, rng=None, idle: float = 0.0,
                     limit: int | None = None, idle_payload: Callable | None = None) -> None:
    """Offer each of ``payloads`` on ``stream`` (``valid``/``ready``/``payload``), one
    at a time, each after a run of idle cycles (each cycle idle with probability
    ``idle``, drawn from ``rng``). A payload is a value, or a dict of the payload's
    fields. ``idle_payload()`` (optional) is what the payload holds while idle, to
    show that an idle stream's payload is not looked at. With ``limit``, waiting more
    than ``limit`` cycles for ``ready`` is an AssertionError."""
    for payload in payloads:
        while idle and rng.random() < idle:
            if idle_payload is not None:
                ctx.set(stream.payload, idle_payload())
            await ctx.tick()
        if isinstance(payload, dict):
            for name, value in payload.items():
                ctx.set(getattr(stream.payload, name), value)
        else:
            ctx.set(stream.payload, payload)
        ctx.set(stream.valid, 1)
        if limit is None:
            await ctx.tick().until(stream.ready)
        else:
            for _ in range(limit):
                *_, ready = await ctx.tick().sample(stream.ready)
                if ready:
                    break
            else:
                raise AssertionError(f"ready stayed low for {limit} cycles")
        ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, count: int, rng=None, stall: float = 0.0,
                     *extra) -> list:
    """Take ``count`` words from ``stream``, with ``ready`` low in a cycle with
    probability ``stall`` (drawn from ``rng``), so words also wait while held. Returns
    the payloads, or with ``extra`` signals ``(payload, *extra values)`` sampled in the
    cycle each word was taken. ``ready`` is left low."""
    words = []
    while len(words) < count:
        ready = not (stall and rng.random() < stall)
        ctx.set(stream.ready, ready)
        _, _, valid, payload, *values = await ctx.tick().sample(stream.valid, stream.payload,
                                                                *extra)
        if valid and ready:
            words.append((payload, *values) if extra else payload)
    ctx.set(stream.ready, 0)
    return words


def stream_monitor(stream, log: list):
    """A background testbench that appends ``(cycle, payload)`` to ``log`` for every word
    that moves on ``stream`` (``valid`` and ``ready`` high at a clock edge); cycle 0 is
    the first edge of the simulation. It only samples, so it can watch a stream that
    other testbenches drive."""
    async def bench(ctx):
        cycle = 0
        async for _, _, valid, ready, payload in ctx.tick().sample(
                stream.valid, stream.ready, stream.payload):
            if valid and ready:
                log.append((cycle, payload))
            cycle += 1

    return bench


def watchdog(limit: int, progress: Callable[[], str] = lambda: ""):
    """A background testbench that fails the simulation after ``limit`` cycles;
    ``progress()`` says how far the bench got."""
    async def bench(ctx):
        for _ in range(limit):
            await ctx.tick()
        raise AssertionError(f"timeout after {limit} cycles {progress()}".strip())

    return bench
