"""Whether two models can be compared token by token: the same engine-side logits and one vocabulary.

Token figures compare two next-token distributions position by position, so ID
``i`` must be the same token to both models and both must give logits over the
same IDs. One checkpoint in two quantizations or engines, or a base and its
fine-tune, share a vocabulary; two families almost never do.
"""

from __future__ import annotations

from backends.core.errors import UsageError
from backends.prompt.families.base import token_pieces

#: How many token IDs, spread over the vocabulary, are compared piece by piece when a model's
#: tokenizer cannot list its vocabulary (a family that reads the vocabulary file itself).
SAMPLED_IDS = 512


def require_logits(handle) -> None:
    """Token figures need every position's logits, which llm-tui reads from torch models in this
    process only (a server returns a few log-probabilities; llama.cpp's runner keeps the last)."""
    if not handle.torch:
        raise UsageError(f"{handle.info.label} runs on {handle.info.device}, which gives no logits at every "
                         "position here: token by token figures need a transformers model",
                         "load it with --engine generate (a .gguf file too), or compare the text only")


def require_same_vocabulary(reference, other) -> None:
    """One clear line when ``other``'s token IDs do not mean what ``reference``'s do."""
    why = vocabulary_difference(reference, other)
    if why is not None:
        raise UsageError(f"the vocabularies differ ({why}): token by token figures need one vocabulary",
                         "compare one checkpoint's quantizations or engines, or a base and its fine-tune; "
                         "these replies are compared as text")


def vocabulary_difference(a, b) -> str | None:
    """How the vocabularies of handles ``a`` and ``b`` differ, or None when they are one."""
    width_a, width_b = logit_width(a.model), logit_width(b.model)
    if width_a != width_b:
        return f"{a.info.label} has {_count(width_a)} token logits, {b.info.label} {_count(width_b)}"
    vocab_a, vocab_b = _listed_vocabulary(a), _listed_vocabulary(b)
    if vocab_a is not None and vocab_b is not None:
        if vocab_a == vocab_b:
            return None
        return _first_different_id(a, vocab_a, b, vocab_b)
    ids = sampled_ids(width_a or 0)
    pieces_a, pieces_b = _pieces(a, ids), _pieces(b, ids)
    for token_id, piece_a, piece_b in zip(ids, pieces_a, pieces_b):
        if piece_a != piece_b:
            return f"ID {token_id} is {piece_a!r} to {a.info.label} and {piece_b!r} to {b.info.label}"
    return None


def logit_width(model) -> int | None:
    """How many token IDs the model's next-token logits cover (its output layer's width)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    width = getattr(head, "out_features", None)  # a quantized layer's weight is packed: its shape says nothing
    if width is None and getattr(head, "weight", None) is not None:
        width = head.weight.shape[0]
    if width is None:
        width = getattr(getattr(model, "config", None), "vocab_size", None)
    return int(width) if width is not None else None


def sampled_ids(width: int) -> list[int]:
    """IDs spread over ``[0, width)``: the first ones (special and byte tokens) and an even sample."""
    step = max(1, width // SAMPLED_IDS)
    return sorted({*range(min(width, 64)), *range(0, width, step), *range(max(0, width - 8), width)})


def _listed_vocabulary(handle) -> dict | None:
    """The tokenizer's whole piece → ID mapping, where it can list it (transformers' tokenizers)."""
    get_vocab = getattr(handle.tokenizer, "get_vocab", None)
    if not callable(get_vocab):
        return None
    try:
        return dict(get_vocab())
    except Exception:  # noqa: BLE001 - a tokenizer that cannot list itself is compared by sample
        return None


def _pieces(handle, ids: list[int]) -> list[str | None]:
    """Each ID's piece as the model's family names it; None for an ID it cannot name."""
    out: list[str | None] = []
    for token_id in ids:
        try:
            out.append(token_pieces(handle.family, [token_id])[0])
        except Exception:  # noqa: BLE001 - an ID past the tokenizer's end (padding of the output layer)
            out.append(None)
    return out


def _first_different_id(a, vocab_a: dict, b, vocab_b: dict) -> str:
    by_id_a = {i: piece for piece, i in vocab_a.items()}
    by_id_b = {i: piece for piece, i in vocab_b.items()}
    for token_id in sorted(set(by_id_a) | set(by_id_b)):
        if by_id_a.get(token_id) != by_id_b.get(token_id):
            return (f"ID {token_id} is {by_id_a.get(token_id)!r} to {a.info.label} "
                    f"and {by_id_b.get(token_id)!r} to {b.info.label}")
    return f"{a.info.label} lists {_count(len(vocab_a))} tokens, {b.info.label} {_count(len(vocab_b))}"


def _count(n: int | None) -> str:
    return f"{n:,}" if n is not None else "an unknown number of"
