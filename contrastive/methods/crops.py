"""Multi-crop inputs (SwAV sec. 3.2, DINO sec. 3.1): views of two or more sizes in one list.

The official SwAV and DINO code runs the backbone once per run of consecutive views of one
size (the two global crops together, then the local crops together), so that batch-norm
statistics are shared within a size, and splits the outputs back per view.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def by_size(fn: Callable[[torch.Tensor], torch.Tensor], views: list[torch.Tensor]) -> list[torch.Tensor]:
    """fn applied to each run of consecutive same-shaped views concatenated; one output per view."""
    out: list[torch.Tensor] = []
    start = 0
    while start < len(views):
        end = start + 1
        while end < len(views) and views[end].shape == views[start].shape:
            end += 1
        out += fn(torch.cat(views[start:end])).chunk(end - start)
        start = end
    return out
