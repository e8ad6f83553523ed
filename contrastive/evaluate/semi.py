"""Consistency training on the unlabelled items: FixMatch (Sohn et al. 2020, arXiv:2001.07685).

Each unlabelled item is read twice: a weak view (the classifier's light crop) and a strong one (a
pretraining view). Where the model's prediction on the weak view is confident (max probability at or
above the threshold), its argmax is a hard pseudo-label that the prediction on the strong view is
trained to match; the labelled items keep their cross-entropy on the weak view:

    loss = CE(labelled, weak)
           + weight * mean over unlabelled of 1[max p(weak) >= threshold] * CE(strong, argmax p(weak))

The loop is the one supervised loop (contrastive.evaluate.fit.fit_classifier). Its items are every
training item with the label hidden, plus the labelled items repeated so that a batch holds about one
labelled item for every `ratio` unlabelled ones (FixMatch draws a labelled batch of B and an unlabelled
batch of mu * B). Here the network starts from the fine-tuned one (the pipeline's `semi` column), so
the pseudo-labels are good from the first step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from contrastive.batches import paired
from contrastive.errors import ContrastiveError
from contrastive.evaluate.fit import Budget, fit_classifier

# The paper's defaults (sec. 4, "we use the same hyperparameters for all amounts of labeled examples"):
# confidence threshold tau 0.95, unlabelled ratio mu 7, unlabelled-loss weight lambda_u 1.
THRESHOLD = 0.95
RATIO = 7
WEIGHT = 1.0


@dataclass
class MaskStats:
    """What the unlabelled term saw: how many unlabelled items it read and how many passed the threshold."""

    unlabelled: int = 0
    confident: int = 0

    @property
    def share(self) -> float:
        return self.confident / max(self.unlabelled, 1)


def fixmatch_objective(model: nn.Module, threshold: float = THRESHOLD, weight: float = WEIGHT,
                       stats: MaskStats | None = None):
    """loss_fn for fit_classifier over paired (strong, weak) views: the loop hands the model's logits on the
    strong view; this reads the weak view with the same model (the labelled term, and the pseudo-labels
    with no gradient through them). Label -1: unlabelled."""

    def loss_fn(strong_logits: torch.Tensor, labels: torch.Tensor, weak: torch.Tensor) -> torch.Tensor:
        labelled = labels >= 0  # (B,)
        unlabelled = ~labelled
        loss = strong_logits.new_zeros(())
        if unlabelled.any():
            with torch.no_grad():  # the pseudo-labels: no gradient through them (and a third of a pass an item)
                weak_logits = model(weak)  # (B, C), BatchNorm over the whole batch
            confidence, pseudo = torch.softmax(weak_logits[unlabelled].float(), dim=1).max(dim=1)  # (U,), (U,)
            mask = (confidence >= threshold).float()
            per_item = F.cross_entropy(strong_logits[unlabelled], pseudo, reduction="none")  # (U,)
            loss = loss + weight * (per_item * mask).mean()
            if stats is not None:
                stats.unlabelled += int(unlabelled.sum())
                stats.confident += int(mask.sum())
        if labelled.sum() > 1:
            loss = loss + F.cross_entropy(model(weak[labelled]), labels[labelled])
        elif labelled.any():  # one labelled item: BatchNorm cannot normalise a batch of one, so read the batch
            loss = loss + F.cross_entropy(model(weak)[labelled], labels[labelled])
        return loss

    return loss_fn


def fixmatch_items(pool, labeled_idx: torch.Tensor, ratio: int = RATIO):
    """Every item of `pool` unlabelled (label -1), then the labelled items (`labeled_idx` into `pool`)
    repeated about len(pool) / (ratio * len(labeled_idx)) times with their labels: a random batch then
    holds about one labelled item for every `ratio` unlabelled ones."""
    labeled_idx = torch.as_tensor(labeled_idx, dtype=torch.int64).reshape(-1)
    if len(labeled_idx) == 0 or not pool.has_labels:
        raise ContrastiveError("consistency training needs labelled items; check the label fraction and the data")
    if ratio < 1:
        raise ContrastiveError(f"the unlabelled ratio must be at least 1, got {ratio}")
    repeats = max(1, math.ceil(len(pool) / (ratio * len(labeled_idx))))
    order = torch.cat([torch.arange(len(pool)), labeled_idx.repeat(repeats)])
    items = pool.subset(order)
    hidden = torch.full((len(pool),), -1, dtype=items.labels.dtype)
    return items.with_labels(torch.cat([hidden, items.labels[len(pool):]]))


def consistency_train(model: nn.Module, pool, labeled_idx: torch.Tensor, reader, *, budget: Budget,
                      threshold: float = THRESHOLD, ratio: int = RATIO, weight: float = WEIGHT, seed: int = 0,
                      device: torch.device | str = "cpu", history: list | None = None, log=None) -> MaskStats:
    """Train `model` (in place) with FixMatch on `pool` (every training item; `labeled_idx` the labelled
    ones). Returns how many unlabelled reads passed the threshold. The budget's epochs count passes over
    the pool and its labelled copies; its `augment` says whether the weak view is the classifier's light
    crop (FixMatch's weak augmentation) or the untouched item."""
    items = fixmatch_items(pool, labeled_idx, ratio)
    stats = MaskStats()
    views = paired(reader.classifier_views(items, "strong"), reader.classifier_views(items, budget.augment))
    fit_classifier(model, items, None, reader, loss_fn=fixmatch_objective(model, threshold, weight, stats),
                   views=views, device=device, seed=seed, history=history, log=log, **budget.kwargs())
    return stats
