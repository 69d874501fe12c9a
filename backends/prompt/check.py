"""PromptCheck: how far what the engine received could be compared with the preview.

The captured IDs are the ground truth. An in-process engine knows them (a
forward pre-hook, or IDs it was given as IDs), so the check is exact: equal, or
the first position where they differ. An engine that only reports how many
prompt tokens it processed allows a count check; one that reports nothing
allows none. The check says which level it reached and never claims more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from backends.prompt.view import PromptView

#: "ids": the engine's prompt IDs are known; "count": only their number; "none": nothing to compare.
CheckLevel = Literal["ids", "count", "none"]


@dataclass(frozen=True)
class PromptCheck:
    view: PromptView  # the prompt as llm-tui rendered it (the preview)
    level: CheckLevel
    ids: list[int] | None = None  # level "ids": what the model received
    count: int | None = None  # level "count": how many prompt tokens the engine reported
    #: How many of the first tokens came from a kept cache, not read now (the prompt cache: their
    #: IDs are the ones the cache was built from, and count in ``ids``); None: not said.
    cached: int | None = None
    #: Why the engine read the prompt whole though a prompt cache was asked for.
    cache_note: str | None = None

    @classmethod
    def of(cls, view: PromptView, captured_ids: list[int] | None, prompt_tokens: int | None = None,
           level: CheckLevel | None = None, *, cached: int | None = None,
           cache_note: str | None = None) -> "PromptCheck":
        """The best check the given facts allow (``level`` caps it, e.g. "count" for a server)."""
        said = {"cached": cached, "cache_note": cache_note}
        if captured_ids is not None and level in (None, "ids"):
            return cls(view, "ids", ids=list(captured_ids), **said)
        if prompt_tokens is not None and level in (None, "ids", "count"):
            return cls(view, "count", count=int(prompt_tokens), **said)
        return cls(view, "none", **said)

    @property
    def read_now(self) -> int | None:
        """How many prompt tokens the engine read this turn (the rest came from its cache)."""
        total = len(self.ids) if self.ids is not None else self.count
        return None if total is None or self.cached is None else max(total - self.cached, 0)

    @property
    def mismatch(self) -> int | None:
        """Level "ids": the first position where the received IDs differ from the preview, else None."""
        return self.view.first_mismatch(self.ids) if self.level == "ids" else None

    @property
    def verified(self) -> bool | None:
        """True when what could be checked agrees, False when it does not, None when nothing could be."""
        if self.level == "ids":
            return self.mismatch is None
        if self.level == "count":
            return self.count == len(self.view.ids)
        return None
