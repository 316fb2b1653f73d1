"""The boards shiftpool builds for, by the name ``--board`` takes."""

from __future__ import annotations

from . import icebreaker, orangecrab, tangnano9k, ulx3s
from .board import Board, BoardError

__all__ = ["BOARDS", "get_board"]

#: Board name -> :class:`~shiftpool.boards.board.Board`.
BOARDS: dict[str, Board] = {b.name: b for b in (
    icebreaker.BOARD, ulx3s.BOARD, orangecrab.BOARD, tangnano9k.BOARD)}


def get_board(name: str | Board) -> Board:
    """The board called ``name`` (a :class:`Board` is returned as it is)."""
    if isinstance(name, Board):
        return name
    try:
        return BOARDS[name]
    except KeyError:
        raise BoardError(f"unknown board {name!r}; choose one of "
                         f"{', '.join(BOARDS)}") from None
