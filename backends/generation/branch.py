"""A branch: a reply's first tokens as they were, then one of the model's alternatives in place
of the next, for the model to go on from (``ModelHandle.stream(prefix=...)``).

The tokens keep their IDs, so nothing is re-tokenised; the chosen token keeps
the model's figures for its position (its own log-probability and rank, the
same entropy and alternatives), so the inspector shows it as what it is: the
model's second or third choice there, not a sure one.
"""

from __future__ import annotations

from backends.core.errors import UsageError
from backends.core.events import TokenEvent, TokenInfo


def branch_prefix(tokens: list, index: int, rank: int) -> list[TokenEvent]:
    """``tokens[:index]`` then alternative ``rank`` (1-based) of ``tokens[index]``.

    ``tokens`` are anything with ``id``, ``text`` and ``info`` (``TokenEvent``,
    ``StoredToken``). Raises ``UsageError`` when there is no such alternative
    to go on from.
    """
    token = tokens[index]
    info = token.info
    if info is None or not 1 <= rank <= len(info.top):
        raise UsageError(f"this token has no alternative {rank}")
    chosen = info.top[rank - 1]
    if chosen.id is None:
        raise UsageError("this engine names alternatives by their text only: there are no IDs to go on from")
    if chosen.id == token.id:
        raise UsageError(f"alternative {rank} is the token already there")
    prefix = [TokenEvent(t.id, t.text, 0.0, t.info) for t in tokens[:index]]
    prefix.append(TokenEvent(chosen.id, chosen.piece, 0.0,
                             TokenInfo(chosen.logprob, None, rank, info.entropy, info.top)))
    return prefix
