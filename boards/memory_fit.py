"""Whether a configuration's memories fit a board's FPGA: the board's device for
:func:`shiftpool.sw.compile.resources.estimate_memories`, with the board's link.

Host side: needs no amaranth (a board's platform is not made)."""

from __future__ import annotations

from ..hw.config import AcceleratorConfig
from ..hw.link.config import LinkConfig
from ..sw.compile.resources import DEVICES, MemoryFit, estimate_memories
from .board import Board
from .registry import get_board

__all__ = ["BOARD_DEVICES", "board_memory_fit"]

#: Board name -> its FPGA's entry in :data:`~shiftpool.sw.compile.resources.DEVICES`.
BOARD_DEVICES = {
    "icebreaker": "iCE40UP5K",
    "ulx3s-85f": "LFE5U-85F",
    "orangecrab-85f": "LFE5U-85F",
    "tangnano9k": "GW1NR-9C",
}


def board_memory_fit(board: str | Board, config: AcceleratorConfig) -> MemoryFit:
    """The memory estimate of ``config`` plus the board's link on ``board``."""
    board = get_board(board)
    link = LinkConfig(**{k: v for k, v in board.link_fields.items()
                         if k in ("max_payload", "rx_fifo_depth")})
    return estimate_memories(config, DEVICES[BOARD_DEVICES[board.name]],
                             link_payload=link.max_payload)
