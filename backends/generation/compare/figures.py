"""What a pair of models' reading of one reply comes to: per-token lists and their summary."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: The per-token lists, in the order ``chunk_divergence`` gives them.
TOKEN_FIELDS = ("kl", "top1_agree", "top1_ref", "top1_other", "logprob_ref", "logprob_other")


@dataclass
class PairFigures:
    """The reference's reply read by the reference and by ``other``, token by token (index: reply position)."""

    reference: int  # indexes of the two models, as the caller numbered them
    other: int
    tokens: int  # the reply's length; fewer figures when the reading was stopped
    kl: list[float] = field(default_factory=list)
    top1_agree: list[bool] = field(default_factory=list)
    top1_ref: list[int] = field(default_factory=list)
    top1_other: list[int] = field(default_factory=list)
    logprob_ref: list[float] = field(default_factory=list)
    logprob_other: list[float] = field(default_factory=list)
    #: Per position, the other model's likeliest tokens as (ID, log-probability), when asked for (``top_k``).
    top_other: list[list[tuple[int, float]]] = field(default_factory=list)

    def extend(self, chunk: dict[str, list]) -> None:
        for name in TOKEN_FIELDS:
            getattr(self, name).extend(chunk[name])
        self.top_other.extend(chunk.get("top_other") or ())

    @property
    def complete(self) -> bool:
        return len(self.kl) == self.tokens

    def summary(self) -> "PairSummary":
        return summarize(self)

    def to_json(self) -> dict:
        data = {"reference": self.reference, "other": self.other, "tokens": self.tokens, "complete": self.complete}
        for name in TOKEN_FIELDS:
            data[name] = [finite(v) if isinstance(v, float) else v for v in getattr(self, name)]
        if self.top_other:
            data["top_other"] = [[[i, finite(v)] for i, v in row] for row in self.top_other]
        data["summary"] = self.summary().to_json()
        return data


@dataclass(frozen=True)
class PairSummary:
    """Mean and max KL (nats), where the max is, the share of positions whose likeliest tokens agree,
    the first position where they do not (None: never), and how much less likely ``other`` finds
    the reply than the reference does (mean log-probability difference, and its perplexity ratio)."""

    scored: int
    mean_kl: float | None
    max_kl: float | None
    max_kl_position: int | None
    top1_agreement: float | None
    first_difference: int | None
    mean_logprob_ref: float | None
    mean_logprob_other: float | None

    @property
    def mean_logprob_diff(self) -> float | None:
        """other − reference: below 0 when the other model finds the reply less likely."""
        if self.mean_logprob_ref is None or self.mean_logprob_other is None:
            return None
        return self.mean_logprob_other - self.mean_logprob_ref

    @property
    def perplexity_ratio(self) -> float | None:
        """The other model's perplexity on the reply over the reference's: exp(−Δ mean log-probability)."""
        diff = self.mean_logprob_diff
        if diff is None:
            return None
        try:
            return math.exp(-diff)
        except OverflowError:
            return math.inf

    def line(self) -> str:
        """The summary in one line: ``mean KL 0.0123 · max 0.310 at token 17 · top-1 agree 94.0% ·
        first differs at token 5 · Δ logprob −0.041 (perplexity ×1.04)`` (positions from 1)."""
        if not self.scored:
            return "nothing read"
        parts = [f"mean KL {_figure(self.mean_kl)}",
                 f"max {_figure(self.max_kl)} at token {self.max_kl_position + 1}",
                 f"top-1 agree {self.top1_agreement:.1%}",
                 "the likeliest tokens agree everywhere" if self.first_difference is None
                 else f"first differs at token {self.first_difference + 1}"]
        diff, ratio = self.mean_logprob_diff, self.perplexity_ratio
        if diff is not None and math.isfinite(diff):
            parts.append(f"Δ logprob {diff:+.3f} (perplexity ×{ratio:.2f})")
        return " · ".join(parts)

    def to_json(self) -> dict:
        return {"scored": self.scored, "mean_kl": finite(self.mean_kl), "max_kl": finite(self.max_kl),
                "max_kl_position": self.max_kl_position, "top1_agreement": self.top1_agreement,
                "first_difference": self.first_difference, "mean_logprob_ref": finite(self.mean_logprob_ref),
                "mean_logprob_other": finite(self.mean_logprob_other),
                "mean_logprob_diff": finite(self.mean_logprob_diff), "perplexity_ratio": finite(self.perplexity_ratio)}


def summarize(figures: PairFigures) -> PairSummary:
    n = len(figures.kl)
    if not n:
        return PairSummary(0, None, None, None, None, None, None, None)
    worst = max(range(n), key=lambda k: figures.kl[k])
    first = next((k for k, agree in enumerate(figures.top1_agree) if not agree), None)
    return PairSummary(scored=n, mean_kl=sum(figures.kl) / n, max_kl=figures.kl[worst], max_kl_position=worst,
                       top1_agreement=sum(figures.top1_agree) / n, first_difference=first,
                       mean_logprob_ref=sum(figures.logprob_ref) / n, mean_logprob_other=sum(figures.logprob_other) / n)


def _figure(value: float | None) -> str:
    if value is None:
        return "—"
    if not math.isfinite(value):
        return "∞"
    return f"{value:.1e}" if 0 < value < 1e-4 else f"{value:.4f}"


def finite(value: float | None) -> float | None:
    """JSON has no infinity or NaN: such a figure (a token one model rules out) is written as null."""
    if value is None or not math.isfinite(value):
        return None
    return value
