"""Producing a reply: open_model, ModelHandle, the Generation stream, TurnSink, and the runners."""
