"""An epoch's order of items that keeps families together, so that a batch holds a few whole families
(--batch-groups; issue 24).

A family is what the modality's `batch_families(dataset)` names (Juliet: a test case, its flawed function
and the fixed twins of the same flow; the split keeps the coarser flaw variant whole). In a random batch of
256 out of 74k functions a function almost never meets its near-identical twins; in a grouped batch they are
its in-batch negatives, and telling them apart is what the detector needs. Pure functions of indices: no data,
no processes (train.py passes the rank).
"""

from __future__ import annotations

import torch


def grouped_order(groups: list[str], generator: torch.Generator) -> torch.Tensor:
    """int64 (N,): every item once; the families in a random order, each family's items shuffled inside it,
    concatenated (so each family is one contiguous run)."""
    codes: dict[str, int] = {}
    family = torch.tensor([codes.setdefault(g, len(codes)) for g in groups], dtype=torch.long)  # (N,)
    place = torch.empty(len(codes), dtype=torch.long)
    place[torch.randperm(len(codes), generator=generator)] = torch.arange(len(codes))  # family -> its slot
    within = torch.randperm(len(groups), generator=generator)  # a random tie-break inside each family
    return torch.argsort(place[family] * len(groups) + within)  # keys are distinct: the sort is the order


def rank_share(order: torch.Tensor, world: int, rank: int, local_batch: int) -> torch.Tensor:
    """Process `rank`'s items of a global `order`, for batches of `local_batch` on each of `world` processes.

    The order is cut into global batches of world * local_batch, and each is dealt out in contiguous local
    batches, the r-th to rank r: a family is split only where a local batch ends. Every rank gets
    len(order) // world items (as DistributedSampler with drop_last), the same number of full batches, and
    no item another rank has. At world size 1 it is the order itself."""
    per_rank = len(order) // world
    steps = per_rank // local_batch  # full local batches, the same on every rank
    full = steps * world * local_batch
    head = order[:full].view(steps, world, local_batch)[:, rank].reshape(-1)  # (steps * local_batch,)
    tail = order[full:world * per_rank][rank::world]  # what no full batch holds, dealt one by one
    return torch.cat([head, tail])
