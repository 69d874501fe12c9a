"""Remote-code checkpoints loaded by llm-tui itself: vendor classes, compatibility fixes, buffer guard, own quantize."""
