"""The prompt cache of one loaded model: the KV cache its last turn left, and the exact IDs it holds.

A chat's next prompt starts with the last one (and most of the reply), so a
turn need only read what follows the longest common prefix of the IDs the
cache holds and the new prompt's IDs; the cache is cut back to that prefix
first (an edit, ``/system`` or a dropped oldest turn changes the prompt
early, and exactly the changed part and what follows it is read again).

The check of the prompt stays exact: the reused part's IDs are the ones the
cache was built from (known here, never guessed), and what the model reads
now is captured as before. A cache kind that cannot be cut back to a prefix
(sliding windows past their window, linear attention, a vendor's tuple
cache) is not kept: its turns are read whole, and ``why_not`` says so.
"""

from __future__ import annotations

import threading

from backends.core.sequences import common_prefix


def why_not_croppable(cache) -> str | None:
    """Why ``cache`` cannot be cut back to a prefix, or None when it can (transformers' plain
    full-attention layers: their keys and values are exactly one entry per position)."""
    try:
        from transformers import Cache
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # pragma: no cover - transformers is a dependency
        return "transformers has no Cache class here"
    if not isinstance(cache, Cache):
        return "this model keeps a cache of its own kind, which cannot be cut to a prefix"
    kinds = {type(layer) for layer in getattr(cache, "layers", ())}
    if not kinds or kinds != {DynamicLayer}:
        names = ", ".join(sorted(k.__name__ for k in kinds)) or "no layers"
        return f"this model's cache layers ({names}) cannot be cut to a prefix"
    return None


class PromptCache:
    """What a runner keeps between turns. ``take`` hands the cache over for a turn, cut to the
    prefix the new prompt shares with it; ``keep`` takes it back with the IDs it then holds."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.ids: list[int] = []
        self.cache = None
        #: Why the last turn's cache was not kept (a cache kind that cannot be cut), or None.
        self.why_not: str | None = None
        self._lock = threading.Lock()  # ``release`` may come from another thread than the turn's
        self._released = False  # set by ``release`` during a turn: what that turn leaves is not kept

    @property
    def tokens(self) -> int:
        return len(self.ids) if self.cache is not None else 0

    @property
    def nbytes(self) -> int:
        """Bytes the kept keys and values take (0 when nothing is kept)."""
        cache = self.cache
        if cache is None:
            return 0
        total = 0
        for layer in getattr(cache, "layers", ()):
            for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                if tensor is not None and hasattr(tensor, "element_size"):
                    total += tensor.numel() * tensor.element_size()
        return total

    @property
    def device(self) -> str | None:
        """Where the kept cache lies ("cpu", "cuda:0"), or None when nothing is kept."""
        for layer in getattr(self.cache, "layers", ()) if self.cache is not None else ():
            keys = getattr(layer, "keys", None)
            if keys is not None and hasattr(keys, "device"):
                return str(keys.device)
        return None

    def take(self, prompt: list[int]) -> tuple[object | None, int]:
        """The kept cache cut to the longest prefix of ``prompt`` it holds, and that prefix's length;
        (None, 0) when nothing can be reused. At least the prompt's last token is always left to read
        (the model's next-token logits come from it). Until ``keep``, the cache is the turn's."""
        with self._lock:
            cache, ids = self.cache, self.ids
            self.cache, self.ids = None, []
            self._released = False
        if not self.enabled or cache is None:
            return None, 0
        reuse = min(common_prefix(ids, prompt), len(prompt) - 1)
        if reuse <= 0:
            return None, 0
        held = cache.get_seq_length()
        if held != len(ids):
            return None, 0  # it does not hold what it is said to: never trust it
        if held > reuse:
            cache.crop(reuse - held)  # transformers 5: a negative count of positions to remove
        return cache, reuse

    def keep(self, cache, ids: list[int]) -> None:
        """After a turn: keep ``cache`` if it holds exactly ``ids`` and can be cut later."""
        if not self.enabled or cache is None or not ids:
            return
        self.why_not = why_not_croppable(cache)
        if self.why_not is not None:
            return
        if cache.get_seq_length() != len(ids):
            self.why_not = "the cache does not hold the turn's IDs one for one"
            return
        with self._lock:
            if not self._released:
                self.cache, self.ids = cache, list(ids)

    def release(self) -> int:
        """Drop what is kept (a switch, an unload, ``/clear``, a turn that needs the room); returns the
        bytes it held. The caller gives the memory back (``hardware.release.release_memory``)."""
        freed = self.nbytes
        with self._lock:
            self.cache, self.ids = None, []
            self._released = True
        return freed
