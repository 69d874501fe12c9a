"""How a turn's tokens are produced: generate(), a decode loop, a checkpoint's own streaming method.

Every runner has ``run(model, view, params, sink) -> new ids`` and reports to a
:class:`~backends.generation.sink.Sink` (``token``, ``capture``, ``stopped``, ``stop_ids``)."""
