"""Subsets of a dataset drawn with fixed seeds: the labelled 1% / 10% of the SimCLRv2 protocol,
and CPU-sized draws of a large set. They see only labels and lengths, never the items."""

from __future__ import annotations

import torch

from contrastive.errors import ContrastiveError


def balanced_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Sorted int64 indices of a class-balanced random subset: round(fraction * n_c) items
    (at least 1) of each class c. The same seed gives the same subset, and with one seed a
    smaller fraction's subset lies inside a larger one's (one permutation per class)."""
    if not 0 < fraction <= 1:
        raise ContrastiveError(f"label fraction must be in (0, 1], got {fraction}; pass e.g. 0.01 or 0.1")
    labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(labels).tolist():  # sorted classes, so the draw order is fixed
        members = torch.nonzero(labels == c).flatten()
        keep = min(len(members), max(1, round(fraction * len(members))))
        order = torch.randperm(len(members), generator=generator)
        chosen.append(members[order[:keep]])
    if not chosen:
        return torch.zeros(0, dtype=torch.int64)
    return torch.sort(torch.cat(chosen)).values


def limit_items(items, n: int | None, seed: int = 0):
    """At most n items drawn at random with a fixed seed (datasets are often stored class by
    class, so the first n would be a few classes only). Sorted, so stable. `items` needs
    len() and subset(indices)."""
    if n is None or n >= len(items):
        return items
    keep = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return items.subset(keep)
