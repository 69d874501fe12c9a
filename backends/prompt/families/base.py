"""The interface every prompt family implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from backends.prompt.view import PromptView


@runtime_checkable
class PromptFamily(Protocol):
    #: Short name shown in the status bar and `inspect --json` "family".
    name: str

    def render(
        self,
        messages: list[dict],
        *,
        add_generation_prompt: bool = True,
        max_new_tokens: int | None = None,
    ) -> PromptView:
        """The exact prompt for ``messages`` (the last one is usually the user's).

        ``max_new_tokens`` matters to families whose truncation budget depends
        on it (Baichuan2).
        """
        ...

    def stop_ids(self) -> list[int]:
        """Token IDs that end a reply."""
        ...

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``, special tokens skipped (used for streamed replies)."""
        ...


def token_pieces(family, ids: list[int]) -> list[str]:
    """Each token's readable text: the family's own ``pieces`` (special tokens and partial
    characters shown) where it has them, else its ``decode`` of each token alone (a server's)."""
    pieces = getattr(family, "pieces", None)
    if callable(pieces):
        return pieces(ids)
    return [family.decode([i]) for i in ids]
