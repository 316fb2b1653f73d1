"""The host side: frames, CRC, the driver (no amaranth)."""
