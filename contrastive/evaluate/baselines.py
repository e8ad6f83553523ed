"""The non-deep baselines a sceptic runs on the raw inputs, on the same label draws as the pipeline.

Each takes vectors (one row per item) and returns class probabilities for the queries, so the
pipeline scores them exactly as it scores the networks. A modality turns its raw items into
vectors (see the image modality's raw_vectors) and lists its baselines (contrastive.modality: `baselines`).
"""

from __future__ import annotations

import numpy as np
import torch

from contrastive.evaluate.knn import knn_votes

KNN_K = 20  # neighbours that vote (the label-efficiency issue's raw-input kNN: k=20, T=0.1)
SPREADING_NEIGHBOURS = 10  # scikit-learn LabelSpreading's knn kernel default (n_neighbors=7) raised to 10
SPREADING_MAX_POOL = 10_000  # unlabelled items in the graph at most (a fixed draw): the graph is built brute force


def knn_probabilities(labeled_x: torch.Tensor, labeled_y: torch.Tensor, queries_x: torch.Tensor, num_classes: int,
                      k: int = KNN_K, temperature: float = 0.1) -> np.ndarray:
    """Weighted kNN (cosine, exp(s / T) votes; Wu et al. 2018) with the labelled items as the bank."""
    return knn_votes(labeled_x, labeled_y, queries_x, num_classes, k, temperature).numpy()


def label_spreading_probabilities(labeled_x: torch.Tensor, labeled_y: torch.Tensor, pool_x: torch.Tensor,
                                  queries_x: torch.Tensor, num_classes: int, seed: int = 0,
                                  neighbours: int = SPREADING_NEIGHBOURS) -> np.ndarray:
    """Label spreading (Zhou et al. 2004, scikit-learn's LabelSpreading, knn kernel) over one graph of
    the labelled items, the unlabelled pool and the queries (transductive, as the method is used);
    returns the spread label distribution of the queries. The pool is cut to SPREADING_MAX_POOL items
    (a fixed draw from `seed`)."""
    from sklearn.semi_supervised import LabelSpreading

    if len(pool_x) > SPREADING_MAX_POOL:
        keep = torch.randperm(len(pool_x), generator=torch.Generator().manual_seed(seed))[:SPREADING_MAX_POOL]
        pool_x = pool_x[keep]
    x = torch.nn.functional.normalize(torch.cat([labeled_x, pool_x, queries_x]).float(), dim=1).numpy()
    y = np.full(len(x), -1, dtype=np.int64)
    y[:len(labeled_x)] = labeled_y.numpy()
    model = LabelSpreading(kernel="knn", n_neighbors=neighbours, max_iter=100).fit(x, y)
    dist = model.label_distributions_[-len(queries_x):]  # (M, classes seen in the labels)
    out = np.zeros((len(queries_x), num_classes))
    out[:, model.classes_] = np.nan_to_num(dist)
    return out
