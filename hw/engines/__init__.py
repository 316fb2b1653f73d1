"""shiftpool.hw.engines."""
