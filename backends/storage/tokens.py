"""A reply's tokens, stored compactly: IDs, texts and each token's probability and alternatives.

One zlib-compressed JSON document per reply, with the numbers rounded to
five significant digits and each alternative's text written once per reply.
About 30 bytes per token with five alternatives (measured in the tests).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

from backends.core.events import Alternative, TokenInfo

VERSION = 1


@dataclass(frozen=True)
class StoredToken:
    id: int | None
    text: str
    info: TokenInfo | None = None

    def to_json(self) -> dict:
        data = {"id": self.id, "text": self.text}
        if self.info is not None:
            data.update(self.info.to_json())
        return data


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.5g}")


def encode_tokens(tokens: list[StoredToken]) -> bytes | None:
    if not tokens:
        return None
    pieces: dict[str, int] = {}

    def piece(text: str) -> int:
        return pieces.setdefault(text, len(pieces))

    rows = []
    for token in tokens:
        info = token.info
        if info is None:
            rows.append([token.id, token.text])
            continue
        rows.append([token.id, token.text, _round(info.logprob), _round(info.sampled_logprob), info.rank,
                     _round(info.entropy), [[a.id, piece(a.piece), _round(a.logprob)] for a in info.top]])
    document = {"v": VERSION, "pieces": list(pieces), "tokens": rows}
    return zlib.compress(json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8"), 9)


def decode_tokens(blob: bytes | None) -> list[StoredToken] | None:
    if not blob:
        return None
    document = json.loads(zlib.decompress(blob).decode("utf-8"))
    pieces = document["pieces"]
    out = []
    for row in document["tokens"]:
        info = None
        if len(row) > 2:
            top = tuple(Alternative(i, pieces[p], lp) for i, p, lp in row[6])
            info = TokenInfo(row[2], row[3], row[4], row[5], top)
        out.append(StoredToken(row[0], row[1], info))
    return out
