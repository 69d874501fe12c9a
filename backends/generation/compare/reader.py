"""One model reading a reply after its own prompt, teacher-forced: its next-token distribution at each reply token.

What the model's prompt cache already holds of the prompt is not read again.
The rest of the prompt goes in with the reply's first chunk, in one forward
call, once it is short enough for one call's logits (``SCORE_CHUNK``
positions); a longer prompt is read ahead in chunks without logits. A short
conversation read without a cache is thus one forward over prompt + reply,
exactly what a plain call of the model on those IDs computes (a quantized
kernel can round differently for calls of another length). The caller holds
the model's lock for the whole reading (``pairs.holding``).
"""

from __future__ import annotations

from backends.core.errors import GenerationError, UsageError
from backends.generation.score import SCORE_CHUNK
from backends.hardware.devices import input_device
from backends.loading.forward_call import ForwardCall, split_output


class ReplyReader:
    """``handle``'s model reading ``prompt_ids`` then ``reply_ids`` (its own prompt, anyone's reply),
    ``chunk`` reply tokens per call."""

    def __init__(self, handle, prompt_ids: list[int], reply_ids: list[int], chunk: int) -> None:
        if not prompt_ids:
            raise UsageError(f"{handle.info.label} has an empty prompt: nothing predicts the reply's first token",
                             "give the conversation at least one message")
        self.model = handle.model
        self.prompt_cache = handle.prompt_cache
        # The reply's last token predicts nothing that is compared: it is never fed.
        self.ids = [*prompt_ids, *reply_ids[:-1]]
        #: The position whose logits predict the reply's first token: the prompt's last.
        self.first = len(prompt_ids) - 1
        self.chunk = chunk
        self.call = ForwardCall.for_model(self.model)
        self.cache = None
        self.fed = 0
        self._tensor = None

    def begin(self) -> None:
        """Take the prompt cache cut to this prompt (a turn just run on it leaves it whole), and read ahead
        the part of the prompt that would not fit in one call with the reply's first chunk."""
        import torch

        self._tensor = torch.tensor([self.ids], dtype=torch.long, device=input_device(self.model))
        if self.prompt_cache is not None:
            # Cut to the prompt: at least its last token is left to read, whose logits predict the reply.
            self.cache, self.fed = self.prompt_cache.take(self.ids[:self.first + 1])
        ahead = max(0, SCORE_CHUNK - self.chunk)  # prompt positions the first reading call may carry
        while self.first - self.fed > ahead:
            self._forward(min(self.first, self.fed + SCORE_CHUNK), every_position=False)

    def read(self, k0: int, k1: int):
        """The log-softmax over reply tokens ``k0 .. k1 - 1``, on the logits' device; chunks come in order.

        In float64: two close distributions' KL is a sum of tiny terms, and float32's rounding of
        log-probabilities near -10 (about 1e-6) would swamp a KL of that size."""
        import torch

        if self.fed > self.first + k0:
            raise ValueError(f"reply chunks are read in order: {k0} was read already")
        logits = self._forward(self.first + k1, every_position=True)
        return torch.log_softmax(logits[0, -(k1 - k0):].double(), dim=-1)

    def end(self) -> None:
        """Hand the cache back to the prompt cache with the IDs it holds (the next turn reads only what is new)."""
        if self.prompt_cache is not None and self.fed:
            self.prompt_cache.keep(self.cache, self.ids[:self.fed])
        self.cache, self._tensor = None, None

    def _forward(self, end: int, *, every_position: bool):
        chunk = self._tensor[:, self.fed:end]
        logits, self.cache = split_output(self.call(self.model, chunk, self.cache, self.fed,
                                                    every_position=every_position))
        self.fed = end
        if self.cache is None and end < len(self.ids):
            raise GenerationError("this model's forward gives no cache back, so a reply cannot be read in chunks",
                                  "compare it with --engine generate")
        return logits
