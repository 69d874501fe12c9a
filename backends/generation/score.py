"""How the model reads a prompt: each token's log-probability given the ones before it.

One forward pass over the prompt, in chunks that carry the cache (a chunk's
logits for every position are vocabulary-wide), with the log-softmax and the
pick of each next token's value done on the model's device: one number per
token comes back. A special token the model never expects where it stands,
or a missing newline in a template, shows as a very unlikely token.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from backends.hardware.devices import input_device
from backends.loading.forward_call import ForwardCall, split_output

#: Positions per forward call: their logits (positions × vocabulary floats) are held at once.
SCORE_CHUNK = 256


@dataclass(frozen=True)
class PromptScore:
    #: One per prompt token: its log-probability given the tokens before it (None for the first).
    logprobs: list[float | None]

    @property
    def mean(self) -> float | None:
        known = [v for v in self.logprobs if v is not None]
        return sum(known) / len(known) if known else None

    def least_expected(self, n: int = 5) -> list[tuple[int, float]]:
        """The ``n`` least expected positions, least first: (position, logprob)."""
        known = [(pos, v) for pos, v in enumerate(self.logprobs) if v is not None]
        return sorted(known, key=lambda item: item[1])[:n]

    def to_json(self) -> dict:
        return {"logprobs": self.logprobs, "mean_logprob": self.mean,
                "least_expected": [{"position": p, "logprob": v} for p, v in self.least_expected()]}


def score_ids(model, ids: list[int], stop: threading.Event | None = None, *,
              leave: Callable[[object, list[int]], None] | None = None) -> PromptScore:
    """The log-probability of each of ``ids`` under a transformers ``model``. ``leave(cache, ids)``
    is handed the cache the scoring built and the IDs it holds (the prompt cache keeps it: a turn
    on the prompt just scored reads only its last token)."""
    import torch

    call = ForwardCall.for_model(model)
    device = input_device(model)
    tensor = torch.tensor([ids], dtype=torch.long, device=device)
    values: list[float | None] = [None]
    cache = None
    fed = 0
    with torch.inference_mode():
        for start in range(0, len(ids), SCORE_CHUNK):
            if stop is not None and stop.is_set():
                break
            chunk = tensor[:, start:start + SCORE_CHUNK]
            logits, cache = split_output(call(model, chunk, cache, start, every_position=True))
            logprobs = torch.log_softmax(logits[0].float(), dim=-1)  # position i predicts token i + 1
            following = tensor[0, start + 1:start + 1 + chunk.shape[1]]
            picked = logprobs[:following.shape[0]].gather(1, following.unsqueeze(1)).squeeze(1)
            values.extend(picked.tolist())
            fed = start + chunk.shape[1]
            del logits, logprobs
    if leave is not None and fed:
        leave(cache, ids[:fed])
    return PromptScore(values[:len(ids)])
