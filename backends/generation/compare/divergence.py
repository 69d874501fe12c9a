"""The per-token figures of one chunk, computed where the logits are: only a few numbers per token leave the device.

``reference`` and ``other`` are two models' log-softmax over the same reply
positions (rows) and the same vocabulary (columns), on one device; ``targets``
the reply's token IDs there.
"""

from __future__ import annotations


def chunk_divergence(reference, other, targets, top_k: int = 0) -> dict[str, list]:
    """Per row: ``kl`` = KL(P_ref ‖ P_other) = Σ p_ref·(log p_ref − log p_other) in nats, whether the two
    likeliest tokens agree, each model's likeliest token, and each model's log-probability of the target;
    with ``top_k``, also the other model's ``top_k`` likeliest tokens there (``top_other``: (ID,
    log-probability) pairs, likeliest first), to set beside the reference's own."""
    import torch

    p = reference.exp()
    # A token the reference gives no probability adds nothing (0 · log 0 is 0, not NaN).
    terms = torch.where(p > 0, p * (reference - other), torch.zeros_like(p))
    kl = terms.sum(dim=-1).clamp_min(0.0)  # never below 0; rounding can go a hair under for equal rows
    top_ref, top_other = reference.argmax(dim=-1), other.argmax(dim=-1)
    picked = targets.unsqueeze(1)
    rows = torch.stack([kl.double(), top_ref.double(), top_other.double(),  # IDs are exact in float64
                        reference.gather(1, picked).squeeze(1).double(), other.gather(1, picked).squeeze(1).double()])
    kl_values, ref_ids, other_ids, logprob_ref, logprob_other = rows.cpu().tolist()  # one transfer per chunk
    top_other: list = []
    if top_k:
        values, indices = other.topk(min(top_k, other.shape[-1]), dim=-1)
        pairs = torch.stack([indices.double(), values.double()], dim=-1).cpu().tolist()
        top_other = [[(int(i), v) for i, v in row] for row in pairs]
    return {"top_other": top_other, "kl": kl_values, "top1_ref": [int(i) for i in ref_ids], "top1_other": [int(i) for i in other_ids],
            "top1_agree": [a == b for a, b in zip(ref_ids, other_ids)],
            "logprob_ref": logprob_ref, "logprob_other": logprob_other}
