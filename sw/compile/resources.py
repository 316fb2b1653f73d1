"""How many block RAMs and SPRAMs a configuration's memories take on a device, and
whether they fit: a host-side estimate (no amaranth) of what yosys will infer.

The memories are the ones the gateware builds (``hw/accelerator.py``,
``hw/engines/pool.py``, ``hw/link``), sized from the same functions
(:mod:`shiftpool.hw.memory_map`):

* each load region (program, taps, weights, bias, indices, pool) is one memory with
  one read port; on an iCE40 UltraPlus the weights and the indices may instead be
  single-port memories (``hw/memories.SinglePortMemory``) in SPRAM, as
  :func:`~shiftpool.hw.spram_choice.spram_memories` picks;
* the two activation buffers are one memory of ``2 * 2**addr_width(ceil(act_depth /
  taps))`` words of ``taps * act_bits`` bits (the buffer is the top address bit),
  with one read port and one write port with lane enables;
* the pool engine holds one lookup table of ``256 * pool_size`` entries per lane,
  single-ported, in SPRAM when ``spram_memories`` picks them (all lanes' copies
  fit the SPRAMs the others leave), else in block RAM; with half tables
  (``pool_table = "half"``) two of ``16 * pool_size`` entries per lane, in block RAM;
  its precompute store is not counted (the demo runs direct mode);
* the link (when ``link_payload`` is given): the frame decoder's ``max_payload``-byte
  buffer, the handler's reply memory (RUN's outputs and the IDENTIFY reply), its STATUS
  counters (asked for in block
  RAM, ``ram_style = "block"``, whatever their size) and the receive FIFO.

A memory takes, per block type, the fewest blocks over the block's aspect ratios
(:attr:`BlockRam.modes`): ``ceil(width / mode_width) * ceil(depth / mode_depth)``.
An SPRAM is 16384 x 16, so a weight row of ``lanes * taps * code_width`` bits takes
``ceil(row / 16)`` SPRAMs side by side, each holding 16384 rows; a memory that asks
for SPRAM (``ram_style = "huge"``) goes there whatever its size.

yosys (``memory_libmap``) leaves a memory in flip-flops when that is cheaper: it
costs a logic bit 1 and an iCE40 EBR 64 (``share/ice40/brams.txt``), so a memory of
no more bits than 64 x its EBR count stays in logic (a 141-bit x 2 program memory, not
9 EBR); the estimate does the same for iCE40 (:attr:`BlockRam.cost`). On ECP5 and
Gowin, small memories may also go to LUT RAM, which the estimate does not model: it
counts them as block RAM, so there it errs on the full side. ``tests/test_mnist.py``
checks the iCE40 count against yosys.
"""

from __future__ import annotations

import dataclasses

from ...hw.config import AcceleratorConfig
from ...hw.link.config import LinkConfig
from ...hw.link.protocol import STATUS_COUNTERS, identify_payload, row_bytes
from ...hw.memory_map import region_depths, region_widths
from ...hw.program import act_memory_depth
from ...hw.spram_choice import (
    EBR_LOGIC_COST,
    ICE40_EBR_MODES,
    ICE40_SPRAM_MODE,
    single_port_memories,
    spram_memories,
)

__all__ = ["BlockRam", "Device", "DEVICES", "MemoryNeed", "Placement", "MemoryFit",
           "accelerator_memories", "bram_blocks", "estimate_memories"]


@dataclasses.dataclass(frozen=True)
class BlockRam:
    """One kind of RAM block: its name, its ``(depth, width)`` aspect ratios and, if
    known, yosys' cost of one block in logic bits (a memory cheaper in flip-flops
    stays there)."""

    name: str
    modes: tuple
    cost: int | None = None

    @property
    def bits(self) -> int:
        return max(d * w for d, w in self.modes)


#: iCE40 EBR (SB_RAM40_4K): 4 kbit.
ICE40_EBR = BlockRam("EBR", ICE40_EBR_MODES, cost=EBR_LOGIC_COST)
#: iCE40 UltraPlus SPRAM (SB_SPRAM256KA): 256 kbit, one 16-bit port.
ICE40_SPRAM = BlockRam("SPRAM", (ICE40_SPRAM_MODE,))
#: ECP5 DP16KD: 18 kbit (512 x 36 only as a simple dual port, which a read port and
#: a write port are).
ECP5_DP16KD = BlockRam("DP16KD", ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18),
                                  (512, 36)))
#: Gowin BSRAM: 18 kbit, the same aspect ratios.
GOWIN_BSRAM = BlockRam("BSRAM", ECP5_DP16KD.modes)


@dataclasses.dataclass(frozen=True)
class Device:
    """An FPGA's memories: ``bram_count`` blocks of ``bram`` and ``spram_count``
    single-port blocks of ``spram`` (none when 0)."""

    name: str
    bram: BlockRam
    bram_count: int
    spram: BlockRam | None = None
    spram_count: int = 0

    @property
    def memory_bits(self) -> int:
        """All the device's block memory, in bits: what no model's weights can pass."""
        spram = self.spram.bits * self.spram_count if self.spram else 0
        return self.bram.bits * self.bram_count + spram

    @property
    def spram_port_bits(self) -> int:
        """Bits the single-port blocks give per cycle in all (one port each)."""
        return max(w for _, w in self.spram.modes) * self.spram_count if self.spram else 0


#: The devices of the supported boards, by part.
DEVICES = {d.name: d for d in (
    Device("iCE40UP5K", ICE40_EBR, 30, ICE40_SPRAM, 4),
    Device("LFE5U-85F", ECP5_DP16KD, 208),
    Device("GW1NR-9C", GOWIN_BSRAM, 26),
)}


def bram_blocks(block: BlockRam, width: int, depth: int) -> int:
    """Blocks of ``block`` a ``width`` x ``depth`` memory takes: the fewest over the
    block's aspect ratios."""
    if width <= 0 or depth <= 0:
        return 0
    return min(-(-width // w) * -(-depth // d) for d, w in block.modes)


@dataclasses.dataclass(frozen=True)
class MemoryNeed:
    """One memory of the design: ``copies`` x ``width`` bits x ``depth`` rows;
    ``block`` if it is asked for in block RAM however small."""

    name: str
    width: int
    depth: int
    copies: int = 1
    block: bool = False

    @property
    def bits(self) -> int:
        return self.copies * self.width * self.depth


def accelerator_memories(cfg: AcceleratorConfig, link_payload: int | None = None,
                         rx_fifo_depth: int = 32) -> list[MemoryNeed]:
    """The memories of the accelerator for ``cfg`` (and of its link, if
    ``link_payload``, the link's ``max_payload``, is given)."""
    widths, depths = region_widths(cfg), region_depths(cfg)
    needs = [MemoryNeed(name, widths[name], depths[name])
             for name in widths if depths[name] and widths[name]]
    # both activation buffers, one memory (the buffer is the top address bit)
    needs.append(MemoryNeed("act", cfg.taps * cfg.act_bits, act_memory_depth(cfg)))
    needs.append(MemoryNeed("out", cfg.acc_width, cfg.out_depth))
    if cfg.engine == "insitu":
        # The row buffer of the layer running (its generate phase writes it, the issue
        # stage reads it: one address, like the weights region).
        needs.append(MemoryNeed("generated rows", cfg.lanes * cfg.taps * cfg.code_width,
                                cfg.weight_depth))
    if cfg.engine == "pool" and cfg.pool_table == "half":
        # Two 16-entry half tables per vector and lane, always in block RAM.
        needs.append(MemoryNeed("lut", cfg.lut_bits, 16 * cfg.pool_size, copies=2 * cfg.lanes))
    elif cfg.engine == "pool":
        needs.append(MemoryNeed("lut", cfg.lut_bits, 256 * cfg.pool_size, copies=cfg.lanes))
    if link_payload is not None:
        needs += [MemoryNeed("link frame buffer", 8, link_payload),
                  # the handler's reply bytes: RUN's cycles and outputs, then IDENTIFY's
                  MemoryNeed("link reply memory", 8, row_bytes(cfg.cycle_bits)
                             + cfg.out_depth * row_bytes(cfg.acc_width)
                             + len(identify_payload(cfg, LinkConfig()))),
                  # at most 16 bits each (LinkConfig.counter_bits): one block
                  MemoryNeed("link STATUS counters", 16, len(STATUS_COUNTERS), block=True),
                  MemoryNeed("link rx FIFO", 8, rx_fifo_depth)]
    return needs


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where one memory goes and how many blocks it takes (all copies); ``block`` is
    ``None`` for a memory left in logic."""

    need: MemoryNeed
    block: BlockRam | None
    blocks: int

    def describe(self) -> str:
        n = self.need
        copies = f"{n.copies} x " if n.copies > 1 else ""
        if self.block is None:
            return f"{n.name}: {copies}{n.width}-bit x {n.depth} in logic"
        text = f"{n.name}: {copies}{n.width}-bit x {n.depth} = {self.blocks} {self.block.name}"
        if self.block.name == "SPRAM":
            wide = -(-n.width // 16)
            deep = -(-n.depth // 16384)
            text += f" ({copies}{wide} wide for a {n.width}-bit row x {deep} deep)"
        return text


@dataclasses.dataclass(frozen=True)
class MemoryFit:
    """The estimate for one configuration on one device."""

    device: Device
    placements: tuple

    def used(self, block: BlockRam | None) -> int:
        return sum(p.blocks for p in self.placements if p.block is block)

    @property
    def bram_used(self) -> int:
        return self.used(self.device.bram)

    @property
    def spram_used(self) -> int:
        return self.used(self.device.spram) if self.device.spram else 0

    @property
    def fits(self) -> bool:
        return (self.bram_used <= self.device.bram_count
                and self.spram_used <= self.device.spram_count)

    @property
    def missing_bits(self) -> int:
        """Bits of the blocks used beyond the device's."""
        d = self.device
        missing = max(0, self.bram_used - d.bram_count) * d.bram.bits
        if d.spram:
            missing += max(0, self.spram_used - d.spram_count) * d.spram.bits
        return missing

    def _over(self, block: BlockRam, have: int) -> str:
        mine = sorted((p for p in self.placements if p.block is block),
                      key=lambda p: -p.blocks)
        used = sum(p.blocks for p in mine)
        return (f"{used} {block.name} needed, {have} on the device ({used - have} missing); "
                f"largest: {mine[0].describe()}")

    @property
    def message(self) -> str:
        """One line: what it takes, or which memory does not fit and what is missing."""
        d = self.device
        if self.fits:
            spram = f", {self.spram_used}/{d.spram_count} SPRAM" if d.spram else ""
            return f"fits {d.name}: {self.bram_used}/{d.bram_count} {d.bram.name}{spram}"
        problems = []
        if d.spram and self.spram_used > d.spram_count:
            problems.append(self._over(d.spram, d.spram_count))
        if self.bram_used > d.bram_count:
            problems.append(self._over(d.bram, d.bram_count))
        return f"does not fit {d.name}: " + "; ".join(problems)


def estimate_memories(cfg: AcceleratorConfig, device: str | Device,
                      link_payload: int | None = None) -> MemoryFit:
    """Place the memories of ``cfg`` (:func:`accelerator_memories`) on ``device``
    (a :class:`Device` or a name in :data:`DEVICES`).

    Where the device has SPRAM, the single-port memories that
    :func:`~shiftpool.hw.spram_choice.spram_memories` picks for its SPRAM count go
    there (the gateware asks for SPRAM for the same ones); everything else goes to
    block RAM, or stays in logic where yosys would keep it there. A design that does
    not fit is reported as placed where it misses the fewest bits: so, or with every
    memory that can go to SPRAM there (deep weight rows: "6 SPRAM needed, 4 on the
    device" says more than the 298 EBR they would take instead).
    """
    if isinstance(device, str):
        try:
            device = DEVICES[device]
        except KeyError:
            raise ValueError(f"unknown device {device!r}; known: {', '.join(DEVICES)}") \
                from None
    if not device.spram:
        return _place(cfg, device, link_payload, frozenset())
    fit = _place(cfg, device, link_payload, spram_memories(cfg, device.spram_count))
    if not fit.fits:
        every = frozenset(name for name, *_ in single_port_memories(cfg))
        other = _place(cfg, device, link_payload, every)
        if other.missing_bits < fit.missing_bits:
            fit = other
    return fit


def _place(cfg: AcceleratorConfig, device: Device, link_payload: int | None,
           in_spram: frozenset) -> MemoryFit:
    """The memories of ``cfg`` on ``device``, those named in ``in_spram`` in SPRAM."""
    placements = []
    for need in accelerator_memories(cfg, link_payload):
        to_spram = need.name in in_spram
        block = device.spram if to_spram else device.bram
        blocks = bram_blocks(block, need.width, need.depth)
        # yosys keeps a memory in logic when it costs no more than the blocks would.
        in_logic = (not need.block and block.cost is not None
                    and need.width * need.depth <= blocks * block.cost)
        if not to_spram and in_logic:
            block, blocks = None, 0
        placements.append(Placement(need, block, need.copies * blocks))
    return MemoryFit(device, tuple(placements))
