"""A checkpoint on disk: where it is, what its files say (headers, remote code, quantization), consent, the default model."""
