"""Comparing ID sequences (lists or ``array``s): the one longest-common-prefix everything shares."""

from __future__ import annotations


def common_prefix(a, b) -> int:
    """How many leading items ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the usual case, one comparison in C
        return n
    low, high = 0, n  # a[:low] == b[:low], a[:high] != b[:high]: halve the gap, each test in C
    while high - low > 1:
        middle = (low + high) // 2
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle
    return low
