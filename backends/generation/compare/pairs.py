"""The reference's reply read by every model at once, chunk by chunk: per-token figures for each pair.

Each model reads the reply after its own prompt (families render one
conversation into different IDs), in lockstep: for each chunk of reply
positions the reference's log-softmax is computed once and moved to each other
model's device, where that pair's figures are computed. Nothing vocabulary-wide
is ever held for more than one chunk. Every model's lock is held for the whole
reading (one forward at a time on a model, as for a turn), and each model's
prompt cache is taken and handed back as a scoring does.
"""

from __future__ import annotations

import threading
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from backends.generation.compare.divergence import chunk_divergence
from backends.generation.compare.figures import PairFigures
from backends.generation.compare.reader import ReplyReader
from backends.generation.compare.vocabulary import require_logits, require_same_vocabulary

#: Reply positions per forward call: each model's chunk of log-probabilities (positions × vocabulary,
#: float64: 25 MB at a 49k vocabulary, 78 MB at 152k) and the reference's copy on each device are held at once.
COMPARE_CHUNK = 64


@dataclass(frozen=True)
class Reading:
    """A model and the prompt it reads the reply after: its own rendering of the conversation."""

    handle: object  # a ModelHandle
    prompt_ids: list[int]
    index: int = 0  # the model's number among those compared, as the figures name it


def check_comparable(reference, other) -> None:
    """Raise UsageError (one line) when the two handles cannot be compared token by token."""
    require_logits(reference)
    require_logits(other)
    require_same_vocabulary(reference, other)


def compare_reply(reference: Reading, others: list[Reading], reply_ids: list[int],
                  stop: threading.Event | None = None, *, chunk: int = COMPARE_CHUNK,
                  top_k: int = 0) -> list[PairFigures]:
    """Per-token figures of ``reply_ids`` (the reference's reply) for (reference, other) in ``others``' order.

    Raises UsageError before reading anything when a model gives no logits here or a vocabulary
    differs from the reference's. Once ``stop`` is set the reading ends between two chunks: the
    figures cover the positions read (``PairFigures.complete`` is False)."""
    import torch

    for other in others:
        check_comparable(reference.handle, other.handle)
    results = [PairFigures(reference.index, other.index, len(reply_ids)) for other in others]
    if not reply_ids:
        return results
    readers: dict[tuple, ReplyReader] = {}  # one reader per (model, prompt): a model against itself reads once
    for reading in (reference, *others):
        key = _key(reading)
        if key not in readers:
            readers[key] = ReplyReader(reading.handle, reading.prompt_ids, reply_ids, chunk)
    with holding([r.handle for r in (reference, *others)]), torch.inference_mode(), _reading(readers.values()):
        for k0 in range(0, len(reply_ids), chunk):
            if stop is not None and stop.is_set():
                break
            k1 = min(k0 + chunk, len(reply_ids))
            read = {key: reader.read(k0, k1) for key, reader in readers.items()}
            ref_logprobs = read[_key(reference)]
            targets = torch.tensor(reply_ids[k0:k1], dtype=torch.long)
            for other, result in zip(others, results):
                logprobs = read[_key(other)]
                result.extend(chunk_divergence(ref_logprobs.to(logprobs.device), logprobs,
                                               targets.to(logprobs.device), top_k))
            del read, ref_logprobs
    return results


@contextmanager
def holding(handles):
    """Every distinct model's lock, taken in one fixed order so two readings cannot wait on each other."""
    distinct = {id(h): h for h in handles}
    with ExitStack() as stack:
        for key in sorted(distinct):
            stack.enter_context(distinct[key]._lock)
        yield


@contextmanager
def _reading(readers):
    started = []
    try:
        for reader in readers:
            started.append(reader)
            reader.begin()
        yield
    finally:
        for reader in started:
            reader.end()


def _key(reading: Reading) -> tuple:
    return id(reading.handle), tuple(reading.prompt_ids)
