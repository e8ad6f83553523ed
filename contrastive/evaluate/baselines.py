"""The non-deep baselines a sceptic runs on the raw inputs, on the same label draws as the pipeline.

Each takes vectors (one row per item) and returns class probabilities for the queries, so the
pipeline scores them exactly as it scores the networks. A modality turns its raw items into
vectors (see the image modality's raw_vectors) and lists its baselines (contrastive.modality: `baselines`),
each a `Baseline`: fitted once per label draw, it returns a predictor that the pipeline asks for the
validation split and for the test split.
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import torch

from contrastive.evaluate.knn import knn_votes

KNN_K = 20  # neighbours that vote (the label-efficiency issue's raw-input kNN: k=20, T=0.1)
SPREADING_NEIGHBOURS = 10  # scikit-learn LabelSpreading's knn kernel default (n_neighbors=7) raised to 10
# The clamping factor: scikit-learn's default is 0.2, Zhou et al. 2004 use 0.99. On the digits' validation split at
# 1% labels (5 draws, graph over the training items): 0.2 / 0.9 / 0.99 read 0.945 / 0.9495 / 0.9375 on SimCLR
# features and 0.802 / 0.8095 / 0.8015 on pixels.
SPREADING_ALPHA = 0.9
SPREADING_MAX_POOL = 10_000  # unlabelled items in the graph at most (a fixed draw): the graph is built brute force

BaselinePredictor = Callable[[object], np.ndarray]  # items -> float class probabilities (len(items), C)


class Baseline(Protocol):
    """A non-deep baseline: fitted once on a label draw, then asked for any number of item sets.

    labeled: the draw's labelled items; pool: the whole training split, read without its labels; val: the
    labelled validation split the fraction's choices read (a baseline may choose its settings on it);
    positive: the class whose F1 and PR-AUC the data reports (None: accuracy is the measure)."""

    def __call__(self, labeled, pool, val, num_classes: int, seed: int,
                 positive: int | None = None) -> BaselinePredictor: ...


def knn_probabilities(labeled_x: torch.Tensor, labeled_y: torch.Tensor, queries_x: torch.Tensor, num_classes: int,
                      k: int = KNN_K, temperature: float = 0.1) -> np.ndarray:
    """Weighted kNN (cosine, exp(s / T) votes; Wu et al. 2018) with the labelled items as the bank."""
    return knn_votes(labeled_x, labeled_y, queries_x, num_classes, k, temperature).numpy()


def spread_labels(labeled_x: torch.Tensor, labeled_y: torch.Tensor, pool_x: torch.Tensor, num_classes: int,
                  neighbours: int = SPREADING_NEIGHBOURS, alpha: float = SPREADING_ALPHA) -> np.ndarray:
    """Label spreading (Zhou et al. 2004; scikit-learn's LabelSpreading, knn kernel) over the graph of the
    labelled and the unlabelled items: each item's spread label distribution, (len(labeled_x) + len(pool_x), C)
    in that order (rows sum to 1; an item no label reached is all zeros)."""
    from sklearn.semi_supervised import LabelSpreading

    x = unit_rows(torch.cat([labeled_x, pool_x]))
    y = np.full(len(x), -1, dtype=np.int64)
    y[:len(labeled_x)] = labeled_y.numpy()
    model = LabelSpreading(kernel="knn", n_neighbors=neighbours, alpha=alpha, max_iter=1000).fit(x, y)
    out = np.zeros((len(x), num_classes))
    out[:, model.classes_] = np.nan_to_num(model.label_distributions_)
    return out


def neighbour_vote(bank_x: torch.Tensor, bank_p: torch.Tensor, queries_x: torch.Tensor,
                   neighbours: int = SPREADING_NEIGHBOURS) -> torch.Tensor:
    """The mean of the `neighbours` nearest (cosine) bank items' distributions: how label spreading labels an
    item outside its graph (scikit-learn's predict_proba, knn kernel). bank_x is (N, D) with unit rows."""
    sims = torch.nn.functional.normalize(queries_x.float(), dim=1) @ bank_x.T  # (M, N)
    nearest = sims.topk(min(neighbours, len(bank_x)), dim=1).indices  # (M, k)
    return bank_p[nearest].mean(dim=1)  # (M, C)


def label_spreading_probabilities(labeled_x: torch.Tensor, labeled_y: torch.Tensor, pool_x: torch.Tensor,
                                  queries_x: torch.Tensor, num_classes: int, seed: int = 0,
                                  neighbours: int = SPREADING_NEIGHBOURS) -> np.ndarray:
    """Label spreading over one graph of the labelled items and the unlabelled pool; each query then takes
    the mean spread distribution of its nearest graph items (neighbour_vote). See spreading_predictor."""
    return spreading_predictor(labeled_x, labeled_y, pool_x, num_classes, seed, neighbours)(queries_x)


def spreading_predictor(labeled_x: torch.Tensor, labeled_y: torch.Tensor, pool_x: torch.Tensor, num_classes: int,
                        seed: int = 0, neighbours: int = SPREADING_NEIGHBOURS):
    """queries_x -> class probabilities (M, C) as numpy, from one label spreading over the labelled items and
    the unlabelled pool (fitted here, once, however many query sets follow). The pool is cut to
    SPREADING_MAX_POOL items (capped_pool). The queries stay out of the graph (inductive): on the digits'
    validation split at 1% labels this read 0.945 (SimCLR features) and 0.802 (pixels) where a graph holding
    the queries too read 0.904 and 0.768 (5 draws each, at scikit-learn's alpha 0.2)."""
    pool_x = capped_pool(pool_x, seed)
    spread = torch.from_numpy(spread_labels(labeled_x, labeled_y, pool_x, num_classes, neighbours))
    bank = torch.from_numpy(unit_rows(torch.cat([labeled_x, pool_x])))
    return lambda queries_x: neighbour_vote(bank, spread, queries_x, neighbours).numpy()


def capped_pool(pool_x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """At most SPREADING_MAX_POOL rows of `pool_x`, a fixed random draw from `seed` (all of them when fewer)."""
    if len(pool_x) <= SPREADING_MAX_POOL:
        return pool_x
    return pool_x[torch.randperm(len(pool_x), generator=torch.Generator().manual_seed(seed))[:SPREADING_MAX_POOL]]


def unit_rows(x: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(x.float(), dim=1).numpy()
