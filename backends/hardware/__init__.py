"""Devices and their memory: placement, dtype, free memory, sampling, peaks, releasing memory, out-of-memory."""
