"""The one batch producer: pretraining, classifier training and feature extraction all draw from it.

A modality says how its raw items become model inputs (`Views`): a function over a whole
batch already in memory (fast: one slice, one move, augmentations as tensor ops on the
device), and a function over one item for data read item by item through a DataLoader.
`batches` walks a given order of item indices in batches and yields (views, labels).

Randomness is a function of the arguments alone: the batched path seeds its generator
once with `epoch_seed`, or per batch with `batch_seed(b)`; the per-item path seeds each
item from (epoch_seed, index). So a run resumed at batch `start` draws what it would have.

What a method asks of a modality is a `ViewSpec`: how many views, of which recipe family. The
modality honours it (`Views`) or refuses it with a one-line error naming both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from contrastive.errors import ContrastiveError


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass(frozen=True)
class ViewSpec:
    """The views a method needs of each item: `global_views` of the recipe family `family` (the name a
    modality knows its recipes by, e.g. the paper whose augmentations they are), then `local_views`
    smaller ones (multi-crop). local_views None: as many as the modality makes by default."""

    family: str
    global_views: int = 2
    local_views: int | None = 0
    method: str = ""  # the method asking, for messages (set by contrastive.methods.view_spec)

    def refusal(self, modality: str, why: str, fix: str) -> ContrastiveError:
        """The one-line error of a modality that cannot make these views."""
        local = "" if not self.local_views else f" + {self.local_views} local"
        asked = f"{self.global_views} global{local} '{self.family}' views"
        return ContrastiveError(f"{self.method or 'the method'} needs {asked}, which the {modality} modality cannot "
                                f"make: {why}; {fix}")


@dataclass(frozen=True)
class Views:
    """How a modality turns raw items into the inputs of a model: a list of views per item."""

    per_item: Callable  # raw item -> list of tensors (one per view)
    batched: Callable | None = None  # (raw batch on the device, torch.Generator) -> list of tensors; None: per item only
    place: Callable[[torch.Tensor], torch.Tensor] = _same  # last touch on the device (e.g. a memory layout)


def paired(first: Views, second: Views) -> Views:
    """One item's views from `first` followed by its views from `second` (e.g. a distillation student's
    augmented view and its teacher's clean one); batched only where both are."""
    batched = None
    if first.batched is not None and second.batched is not None:
        batched = lambda raw, g: first.batched(raw, g) + second.batched(raw, g)  # noqa: E731
    return Views(lambda item: first.per_item(item) + second.per_item(item), batched, first.place)


class Transformed(Dataset):
    """Applies `transform` to each item of `base`: returns (transform(item), label).

    With `seed`, item i is transformed under torch's RNG seeded from (seed, i), restored
    afterwards: its views then depend neither on the loader workers nor on which items came
    before, so a run resumed mid-epoch draws what it would have drawn.
    """

    def __init__(self, base, transform, seed: int | None = None):
        self.base = base
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        item, label = self.base[i]
        if self.seed is None:
            return self.transform(item), label
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + int(i))
            return self.transform(item), label


def batch_slices(n: int, batch_size: int, drop_last: bool) -> list[slice]:
    """Consecutive slices of `batch_size` over n positions; the last partial one kept unless drop_last."""
    stop = (n // batch_size) * batch_size if drop_last else n
    return [slice(i, min(i + batch_size, stop)) for i in range(0, stop, batch_size)]


def batches(dataset, views: Views, order: torch.Tensor, batch_size: int, device: torch.device, *,
            epoch_seed: int, batch_seed: Callable[[int], int] | None = None, drop_last: bool = False,
            start: int = 0, num_workers: int = 0) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
    """(views, labels) for the items at `order` (int64 (n,)), `batch_size` at a time, from batch `start` on.

    The batched path is taken when the modality offers one and the dataset holds its items in
    memory (`dataset.in_memory`); labels are -1 for unlabelled items.
    """
    slices = batch_slices(len(order), batch_size, drop_last)[start:]
    if views.batched is not None and getattr(dataset, "in_memory", False):
        return _tensor_batches(dataset, views, order, slices, device, epoch_seed, batch_seed, start)
    return _loader_batches(dataset, views, order, slices, batch_size, device, epoch_seed, num_workers)


def _tensor_batches(dataset, views, order, slices, device, epoch_seed, batch_seed, start):
    labels = dataset.labels if dataset.labels is not None else torch.full((len(dataset),), -1)
    generator = torch.Generator(device)
    if batch_seed is None:
        generator.manual_seed(epoch_seed)
    for b, part in enumerate(slices, start=start):
        idx = order[part]
        raw = dataset.take(idx).to(device, non_blocking=True)
        if batch_seed is not None:
            generator.manual_seed(batch_seed(b))
        yield [views.place(v) for v in views.batched(raw, generator)], labels[idx].to(device, non_blocking=True)


def _loader_batches(dataset, views, order, slices, batch_size, device, epoch_seed, num_workers):
    if not slices:
        return
    kept = order[slices[0].start:slices[-1].stop].tolist()
    loader = DataLoader(Transformed(dataset, views.per_item, seed=epoch_seed), batch_size=batch_size, sampler=kept,
                        num_workers=num_workers, pin_memory=device.type == "cuda")
    for items, labels in loader:
        yield ([views.place(v.to(device, non_blocking=True)) for v in items],
               torch.as_tensor(labels).to(device, non_blocking=True))
