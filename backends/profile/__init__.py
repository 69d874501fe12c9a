"""Measuring memory and speed against context length (no printing: the command line and the app render rows)."""
