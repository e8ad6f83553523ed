"""The evaluation protocol: a validation split for every choice, several label draws, mean ± sd.

Nothing here looks at items, only at labels, lengths and the names of the groups items belong to.
The pipeline carves the validation split out of the training data once, chooses everything
(learning rates, epochs, k, ...) on it, and reads the test split only for the final numbers.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch

from contrastive.errors import ContrastiveError
from contrastive.subsets import balanced_subset


def validation_split(labels: torch.Tensor, fraction: float, seed: int,
                     groups: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices), both sorted int64: a class-balanced `fraction` of every
    class goes to validation (at least one item of a class with two or more), the rest stays. With
    `groups` (a name per item, e.g. a Juliet flaw variant) whole groups go instead (group_validation),
    so near-identical members of one group never sit on both sides."""
    if not 0 < fraction < 1:
        raise ContrastiveError(f"validation fraction must be in (0, 1), got {fraction}; pass e.g. 0.1")
    labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
    if groups is None:
        val_idx = balanced_validation(labels, fraction, seed)
    else:
        val_idx = group_validation(labels, fraction, seed, groups)
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[val_idx] = False
    return torch.nonzero(mask).flatten(), val_idx


def balanced_validation(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Sorted int64 indices: `fraction` of every class drawn with `seed`, at least one, never all of a class."""
    generator = torch.Generator().manual_seed(seed)
    val = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        keep = min(len(members) - 1, max(1, round(fraction * len(members))))
        val.append(members[torch.randperm(len(members), generator=generator)[:keep]])
    return torch.sort(torch.cat(val)).values if val else torch.zeros(0, dtype=torch.int64)


def group_validation(labels: torch.Tensor, fraction: float, seed: int, groups: list[str]) -> torch.Tensor:
    """Sorted int64 indices of whole groups: the groups in a random order fixed by `seed` are taken until
    `fraction` of the items are in (the last group taken overshoots by less than its size). A group is passed
    over when it holds the last training items of a class, so training keeps every class. Then each class
    validation lacks gets the first group in that order that holds it and may go: validation then holds
    every class held by two groups or more, and may exceed the fraction by those groups. A class that one
    group alone holds stays in training only (it cannot be on both sides)."""
    if len(groups) != len(labels):
        raise ContrastiveError(f"validation groups must name one group per item: {len(groups)} names for "
                               f"{len(labels)} labels")
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(str(g), []).append(i)
    names = sorted(members)
    order = [names[i] for i in torch.randperm(len(names), generator=torch.Generator().manual_seed(seed)).tolist()]
    values = labels.tolist()
    counts = {g: Counter(values[i] for i in members[g]) for g in names}
    left, taken, size = Counter(values), set(), 0  # training items per class, groups taken, items taken

    def take(g: str) -> bool:
        if any(left[c] <= k for c, k in counts[g].items()):
            return False
        left.subtract(counts[g])
        taken.add(g)
        return True

    target = max(1, round(fraction * len(values)))
    for g in order:
        if size >= target:
            break
        size += len(members[g]) if take(g) else 0
    for c in sorted(set(values)):
        if not any(c in counts[g] for g in taken):
            next((g for g in order if g not in taken and c in counts[g] and take(g)), None)
    val = sorted(i for g in taken for i in members[g])
    return torch.tensor(val, dtype=torch.int64)


def draw_seed(seed: int, draw: int) -> int:
    """The seed of label draw `draw` of a run seeded `seed` (draw 0 is the run's own seed)."""
    return seed + 1000 * draw


def label_draws(labels: torch.Tensor, fraction: float, draws: int, seed: int) -> list[torch.Tensor]:
    """`draws` class-balanced subsets of `fraction` of the labels, each with its own seed. At
    fraction 1 every draw is the whole set, so one draw is returned."""
    if draws < 1:
        raise ContrastiveError(f"the number of label draws must be at least 1, got {draws}")
    if fraction >= 1:
        draws = 1
    return [balanced_subset(labels, fraction, draw_seed(seed, d)) for d in range(draws)]


def capped_validation(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Sorted int64 indices of at most `n` validation items, class-balanced: the validation a label fraction's
    choices may read holds no more labels than its draw (Oliver et al. 2018, "Realistic evaluation of deep
    semi-supervised learning algorithms", sec. 4.6: a validation set larger than the training labels is not
    realistic). All of them when n >= len(labels)."""
    labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
    if n < 1:
        raise ContrastiveError(f"a validation split needs at least one item, got a cap of {n}")
    if n >= len(labels):
        return torch.arange(len(labels))
    chosen = balanced_subset(labels, n / len(labels), seed)  # rounding per class may overshoot by a few
    if len(chosen) > n:
        keep = torch.randperm(len(chosen), generator=torch.Generator().manual_seed(seed))[:n]
        chosen = torch.sort(chosen[keep]).values
    return chosen


def summary(values: list[float]) -> dict:
    """{"mean", "sd", "values"}: the sd is the sample standard deviation (n - 1), 0 for one value."""
    if not values:
        raise ValueError("no values to summarise")
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "sd": sd, "values": list(values)}


def mean_sd(stats: dict, digits: int = 3) -> str:
    """'0.951 ± 0.012' (the ± part left out for one value)."""
    if len(stats["values"]) == 1:
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ± {stats['sd']:.{digits}f}"


class ValidationScore(float):
    """A validation accuracy that carries the mean log-probability its model gave the true labels: a small
    validation split (as many items as a draw has labels) ties often, and the likelihood breaks the tie."""

    log_likelihood: float

    def __new__(cls, accuracy: float, log_likelihood: float):
        score = super().__new__(cls, accuracy)
        score.log_likelihood = log_likelihood
        return score


def best_on_validation(scores: dict) -> object:
    """The key with the highest validation score; a tie goes to the higher log-likelihood where the scores
    carry one (ValidationScore), then to the first given."""
    if not scores:
        raise ValueError("no candidates to choose from")
    keys = list(scores)

    def rank(key):
        score = scores[key]
        return float(score), getattr(score, "log_likelihood", 0.0), -keys.index(key)

    return max(keys, key=rank)


def validation_measure(probs: np.ndarray, labels: np.ndarray, positive: int | None) -> ValidationScore:
    """What a choice on validation maximises: PR-AUC of the positive class (scikit-learn's average precision)
    where the data has one and validation holds it, else accuracy; a small validation split ties often, and
    the mean log-probability of the true labels breaks the tie (ValidationScore)."""
    likelihood = float(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())
    if positive is not None and (labels == positive).any():
        from sklearn.metrics import average_precision_score

        return ValidationScore(float(average_precision_score(labels == positive, probs[:, positive])), likelihood)
    return ValidationScore(float((probs.argmax(axis=1) == labels).mean()), likelihood)
