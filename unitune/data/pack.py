"""Best-fit-decreasing packing of features into rows of at most `max_length` tokens.

Each row is a list of features; collate.py lays them side by side with
`position_ids` restarting per feature and a block-causal attention mask, so
packed examples never see each other (checked: packed == unpacked losses).
"""

import bisect


def pack(features: list[dict], max_length: int) -> list[list[dict]]:
    """Group features into bins of total length <= max_length, longest first, each into the tightest fit."""
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (space left, bin index)
    for i in order:
        n = len(features[i]["input_ids"])
        at = bisect.bisect_left(free, (n, -1))
        if at < len(free):
            space, b = free.pop(at)
            bins[b].append(i)
        else:
            b, space = len(bins), max_length
            bins.append([i])
        if space - n > 0:
            bisect.insort(free, (space - n, b))
    return [[features[i] for i in b] for b in bins]
