"""Incremental detokenisation that never splits a character.

Decoding each token on its own breaks multi-byte characters (a Chinese
character or an emoji is often two or three byte-level tokens). This decoder
re-decodes a short window of recent tokens and releases text only once it no
longer ends in a partial character, so the concatenated deltas equal the
tokenizer's own decode of the whole reply. Each step decodes a handful of
tokens, so streaming stays linear in the reply length.
"""

from __future__ import annotations

from typing import Callable

REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self.ids: list[int] = []
        self._prefix = 0  # start of the window re-decoded for context
        self._read = 0  # tokens before this were already released as text
        self.text = ""

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes ('' while a character is partial)."""
        self.ids.append(token_id)
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            delta = after[len(before) :]
            self._prefix, self._read = self._read, len(self.ids)
            self.text += delta
            return delta
        return ""

    def add_text(self, text: str) -> str:
        """Text that came as text (a server streaming without token IDs): it joins the reply as it is."""
        self.text += text
        return text

    def flush(self) -> str:
        """Release whatever is pending at the end of a reply.

        A reply cut off by max_new_tokens can end inside a character; those
        trailing bytes are not text, so they are left out (their token IDs
        are still reported). Invalid bytes before the end still show as U+FFFD.
        """
        if self._read == len(self.ids):
            return ""
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        delta = after[len(before) :] if after.startswith(before) else ""
        delta = delta.rstrip(REPLACEMENT)
        self._prefix = self._read = len(self.ids)
        self.text += delta
        return delta
