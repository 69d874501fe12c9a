"""A reply's tokens, stored compactly: IDs, texts and each token's probability and alternatives.

One zlib-compressed JSON document per reply, laid out by column (all IDs,
then all texts, then each figure), so that like sits next to like and
compresses well. Log-probabilities and entropies are kept in thousandths of a
nat, as integers: the inspector shows probabilities to 0.1%, and a thousandth
of a nat changes a probability by 0.1% of itself. An alternative's text is
written once per reply. About 48 bytes per token with five alternatives
(the default model, 200 tokens: 47.5 greedy, 50.7 sampled; the figures as
one row per token at five significant digits took 55 to 57).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

from backends.core.events import Alternative, TokenInfo

VERSION = 2
#: Figures are stored as integers in units of 1/SCALE nat.
SCALE = 1000


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


def _milli(value: float | None) -> int | None:
    return None if value is None else round(value * SCALE)


def _nats(value: int | None) -> float | None:
    return None if value is None else value / SCALE


def encode_tokens(tokens: list[StoredToken]) -> bytes | None:
    if not tokens:
        return None
    pieces: dict[str, int] = {}
    columns: dict[str, list] = {"id": [], "text": [], "lp": [], "slp": [], "rank": [], "ent": [],
                                "top_id": [], "top_piece": [], "top_lp": []}
    for token in tokens:
        info = token.info
        columns["id"].append(token.id)
        columns["text"].append(token.text)
        if info is None:
            columns["lp"].append(None)
            continue
        columns["lp"].append(_milli(info.logprob))
        same = info.sampled_logprob is not None and abs(info.sampled_logprob - info.logprob) < 0.5 / SCALE
        columns["slp"].append("=" if same else _milli(info.sampled_logprob))  # "=": the same as lp
        columns["rank"].append(info.rank)
        columns["ent"].append(_milli(info.entropy))
        columns["top_id"].append([a.id for a in info.top])
        columns["top_piece"].append([pieces.setdefault(a.piece, len(pieces)) for a in info.top])
        columns["top_lp"].append([_milli(a.logprob) for a in info.top])
    document = {"v": VERSION, "pieces": list(pieces), **columns}
    return zlib.compress(json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8"), 9)


def decode_tokens(blob: bytes | None) -> list[StoredToken] | None:
    if not blob:
        return None
    document = json.loads(zlib.decompress(blob).decode("utf-8"))
    if document.get("v") == 1:
        return _decode_rows(document)
    pieces = document["pieces"]
    out = []
    figures = 0  # tokens with figures are numbered apart: the figure columns skip the others
    for token_id, text, lp in zip(document["id"], document["text"], document["lp"]):
        info = None
        if lp is not None:
            n = figures
            figures += 1
            slp = document["slp"][n]
            top = tuple(Alternative(i, pieces[p], _nats(v)) for i, p, v in
                        zip(document["top_id"][n], document["top_piece"][n], document["top_lp"][n]))
            info = TokenInfo(_nats(lp), _nats(lp) if slp == "=" else _nats(slp), document["rank"][n],
                             _nats(document["ent"][n]), top)
        out.append(StoredToken(token_id, text, info))
    return out


def _decode_rows(document: dict) -> list[StoredToken]:
    """Version 1: one row a token, figures to five significant digits."""
    pieces = document["pieces"]
    out = []
    for row in document["tokens"]:
        info = None
        if len(row) > 2:
            top = tuple(Alternative(i, pieces[p], lp) for i, p, lp in row[6])
            info = TokenInfo(row[2], row[3], row[4], row[5], top)
        out.append(StoredToken(row[0], row[1], info))
    return out
