"""A prompt within a token budget, by the family's own rule (Qwen's window, Baichuan2's budget)
or by leaving out the oldest messages (the system prompt and the last message stay)."""

from __future__ import annotations

import threading
from dataclasses import replace

from backends.core.errors import UsageError
from backends.prompt.cancel import cancellable, check_cancelled
from backends.prompt.view import Dropped, PromptView

#: Attempts at narrowing a family's own rule (each corrects by the overshoot).
_NARROWING_TRIES = 4
#: In the reason of every message left out for a budget by the oldest-first rule.
BUDGET_REASON = "over the prompt budget"
#: The rule for families without one of their own.
OLDEST_FIRST = "leaving out the oldest messages (the system prompt and the last message stay)"


def truncation_rule(family) -> str:
    """How ``family`` keeps a prompt within a budget, in words."""
    return getattr(family, "truncation_rule", None) or OLDEST_FIRST


def render_within(family, messages: list[dict], max_prompt_tokens: int | None, *,
                  add_generation_prompt: bool = True, max_new_tokens: int | None = None,
                  cancel: threading.Event | None = None, tools: list[dict] | None = None) -> PromptView:
    """``family.render(messages)`` cut to at most ``max_prompt_tokens`` tokens (None: no budget).

    Once ``cancel`` is set, ``RenderCancelled`` is raised at the next check: between the
    renders narrowing takes, and inside a family's render where it checks (``prompt.cancel``).
    """
    with cancellable(cancel):
        return _render_within(family, messages, max_prompt_tokens, add_generation_prompt, max_new_tokens, tools)


def _render_within(family, messages: list[dict], max_prompt_tokens: int | None, add_generation_prompt: bool,
                   max_new_tokens: int | None, tools: list[dict] | None = None) -> PromptView:
    check_cancelled()
    kwargs = dict(add_generation_prompt=add_generation_prompt, max_new_tokens=max_new_tokens)
    if tools:  # only families with a tool format take them; the others say so in one line
        if not getattr(family, "supports_tools", False):
            raise UsageError(f"the {family.name} prompt format has no place for tools",
                             "compare without --tools, or use a model whose format has tool calls")
        kwargs["tools"] = tools
    view = family.render(messages, **kwargs)
    if not max_prompt_tokens or len(view.ids) <= max_prompt_tokens:
        return replace(view, messages=list(messages), tools=tools or None)
    budget = max(int(max_prompt_tokens), 1)
    narrowed = getattr(family, "narrowed", None)
    if callable(narrowed):
        view = _narrow(family, messages, budget, kwargs)
    else:
        view = _drop_oldest(family, messages, budget, view, kwargs)
    if len(view.ids) > budget:
        view.warnings.append(f"the prompt is {len(view.ids):,} tokens, over the budget of {budget:,} "
                             "even with every older message left out")
    gone = {d.index for d in view.dropped if not d.partial}
    return replace(view, messages=[m for i, m in enumerate(messages) if i not in gone], tools=tools or None)


def _narrow(family, messages: list[dict], budget: int, kwargs: dict) -> PromptView:
    """The family's own rule with its window set so the whole prompt fits in ``budget``."""
    target = budget
    view = None
    for _ in range(_NARROWING_TRIES):
        check_cancelled()
        view = family.narrowed(target, kwargs["max_new_tokens"]).render(messages, **kwargs)
        over = len(view.ids) - budget
        if over <= 0 or target - over < 1:
            break
        target -= over  # the rule's window left out the last message or framing: shrink by that
    return view


def _drop_oldest(family, messages: list[dict], budget: int, full: PromptView, kwargs: dict) -> PromptView:
    """Leave out the oldest rounds (a user message and what answers it) until the prompt fits."""
    first = 1 if messages and messages[0].get("role") == "system" else 0
    last = len(messages) - 1
    # Cut points: drop messages[first:cut]; a cut always lands on a user message (or the last one).
    cuts = [c for c in range(first + 1, last + 1) if messages[c].get("role") == "user" or c == last]
    if not cuts:
        return full

    def render_from(cut: int) -> tuple[PromptView, list[int]]:
        check_cancelled()  # each try is a whole render
        kept = list(range(first)) + list(range(cut, len(messages)))
        return family.render([messages[i] for i in kept], **kwargs), kept

    # Fewest messages dropped that fits: the prompt shrinks as the cut moves on.
    low, high = 0, len(cuts) - 1
    best = None
    while low <= high:
        middle = (low + high) // 2
        view, kept = render_from(cuts[middle])
        if len(view.ids) <= budget:
            best, high = (cuts[middle], view, kept), middle - 1
        else:
            low = middle + 1
    if best is None:
        cut = cuts[-1]
        view, kept = render_from(cut)
    else:
        cut, view, kept = best
    sizes: dict[int, int] = {}
    for span in full.spans:
        if span.index >= 0:
            sizes[span.index] = sizes.get(span.index, 0) + span.end - span.start
    reason = f"{BUDGET_REASON} of {budget:,} tokens"
    dropped = [Dropped(i, messages[i].get("role", ""), sizes.get(i, 0), reason=reason, by="budget") for i in range(first, cut)]
    # In place: a wrapper that remembers which messages each view came from (the native
    # engine) must find this very object.
    view.spans = [replace(s, index=kept[s.index]) if 0 <= s.index < len(kept) else s for s in view.spans]
    view.dropped = dropped + list(view.dropped)
    return view
