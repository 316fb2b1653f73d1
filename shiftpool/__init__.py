"""shiftpool: memory-efficient neural networks as FPGA accelerators."""

__version__ = "0.1.0"
