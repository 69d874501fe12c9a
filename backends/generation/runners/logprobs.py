"""Each generated token's probability and its alternatives, from the logits a runner already has.

The work stays on the model's device: a log-softmax of the raw logits (the
model's own distribution) and of the processed ones (what was sampled from:
temperature, top-k, top-p, repetition penalty applied), a top-K, an entropy
and a rank. Only K values, K IDs and four numbers per token come back, in one
transfer.
"""

from __future__ import annotations

from typing import Callable

from backends.core.events import Alternative, TokenInfo


class TokenScorer:
    """Builds a ``TokenInfo`` per token; ``piece(id)`` gives an alternative's readable text."""

    def __init__(self, k: int, piece: Callable[[int], str]) -> None:
        self.k = k
        self.piece = piece
        self._pieces: dict[int, str] = {}

    def piece_of(self, token_id: int) -> str:
        text = self._pieces.get(token_id)
        if text is None:
            text = self._pieces[token_id] = self.piece(token_id)
        return text

    def info(self, raw, processed, token_id: int) -> TokenInfo:
        """``raw``: the logits the model gave for this position (a 1-D tensor over the vocabulary);
        ``processed``: those the token was drawn from (None: the same)."""
        import torch

        logprobs = torch.log_softmax(raw.float(), dim=-1)
        chosen = logprobs[token_id]
        rank = (logprobs > chosen).sum().to(logprobs.dtype) + 1
        entropy = -(logprobs.exp() * logprobs).nan_to_num(0.0).sum()
        sampled = torch.log_softmax(processed.float(), dim=-1)[token_id] if processed is not None else chosen
        values, indices = logprobs.topk(min(self.k, logprobs.shape[-1]))
        packed = torch.cat([values, indices.to(values.dtype), torch.stack([chosen, rank, entropy, sampled])])
        numbers = packed.tolist()  # the one transfer off the device
        k = values.shape[-1]
        top = tuple(Alternative(int(i), self.piece_of(int(i)), v) for v, i in zip(numbers[:k], numbers[k:2 * k]))
        lp, rank_value, ent, slp = numbers[2 * k:]
        return TokenInfo(lp, slp, int(rank_value), ent, top)


def scorer_for(family, k: int) -> TokenScorer | None:
    """The scorer for a family's tokens (None when no alternatives are asked for)."""
    if k <= 0:
        return None
    pieces = getattr(family, "pieces", None)
    if callable(pieces):
        return TokenScorer(k, lambda token_id: pieces([token_id])[0])
    return TokenScorer(k, lambda token_id: family.decode([token_id]))
