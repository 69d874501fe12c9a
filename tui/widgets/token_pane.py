"""A reply drawn token by token, in chunks that each end at a line break.

Wrapping a long reply as one text costs about 0.1 s at 4,000 tokens, every
time the cursor moves; in chunks of about 200 tokens a move redraws only the
chunk the cursor leaves and the one it enters.
"""

from __future__ import annotations

from bisect import bisect_right

from textual.containers import Vertical
from textual.widgets import Static

from .token_view import chunk_starts, reply_content

CHUNK_TOKENS = 200


class TokenPane(Vertical):
    DEFAULT_CSS = "TokenPane { height: auto; } TokenPane > Static { height: auto; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._drawn: tuple | None = None  # (the token list, its length, colour) last drawn
        self._starts: list[int] = [0]
        self._cursor: int | None = None
        self._styles: list[str] | None = None

    def show(self, tokens: list, *, colour: bool, cursor: int | None, styles: list[str] | None = None) -> None:
        """``styles``: one per token, in place of the probability colours (a divergence)."""
        self._styles = styles
        key = (id(tokens), len(tokens), colour, id(styles))
        if key == self._drawn:
            for chunk in {self._chunk_of(self._cursor), self._chunk_of(cursor)} - {None}:
                self._draw(tokens, chunk, colour, cursor)
            self._cursor = cursor
            return
        self._drawn, self._cursor = key, cursor
        self._starts = chunk_starts(tokens, CHUNK_TOKENS)
        contents = [self._content(tokens, chunk, colour, cursor) for chunk in range(len(self._starts))]
        statics = list(self.query_children(Static))
        for static, content in zip(statics, contents):
            static.update(content)
        for extra in statics[len(contents):]:
            extra.remove()
        if len(contents) > len(statics):
            self.mount_all([Static(content) for content in contents[len(statics):]])

    def cursor_widget(self) -> Static | None:
        """The chunk the cursor is in (to scroll it into view)."""
        chunk = self._chunk_of(self._cursor)
        statics = list(self.query_children(Static))
        return statics[chunk] if chunk is not None and chunk < len(statics) else None

    def _chunk_of(self, index: int | None) -> int | None:
        return None if index is None else bisect_right(self._starts, index) - 1

    def _content(self, tokens: list, chunk: int, colour: bool, cursor: int | None):
        start = self._starts[chunk]
        end = self._starts[chunk + 1] if chunk + 1 < len(self._starts) else len(tokens)
        local = cursor - start if cursor is not None and start <= cursor < end else None
        styles = self._styles[start:end] if self._styles is not None else None
        return reply_content(tokens[start:end], colour=colour, cursor=local, trim_end=end < len(tokens),
                             styles=styles)

    def _draw(self, tokens: list, chunk: int, colour: bool, cursor: int | None) -> None:
        statics = list(self.query_children(Static))
        if chunk < len(statics):
            statics[chunk].update(self._content(tokens, chunk, colour, cursor))
