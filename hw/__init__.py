"""shiftpool.hw."""
