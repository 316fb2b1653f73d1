"""The compression schemes: quantizers and golden models."""
