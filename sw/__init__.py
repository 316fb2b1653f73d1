"""shiftpool.sw."""
