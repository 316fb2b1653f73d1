"""shiftpool.boards."""
