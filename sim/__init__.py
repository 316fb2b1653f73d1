"""shiftpool.sim."""
