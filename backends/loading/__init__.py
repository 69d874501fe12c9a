"""Loading weights: quantization plans, the transformers loader, remote-code checkpoints."""
