"""Scoring the columns: validation probabilities (accuracy for the log, each column's F1 threshold on data with
a positive class), and the test numbers, read once.

`final_scores` and `final_knn` are the only readers of the test split that score it (tests/test_pipeline.py
checks it); `network_costs` times the shipped networks on it and keeps no score.
"""

from __future__ import annotations

import numpy as np
import torch

from contrastive.config import KnnConfig
from contrastive.errors import ContrastiveError
from contrastive.evaluate.knn import encoder_knn_accuracy, knn_accuracy
from contrastive.pipeline.fits import Predictor, accuracy, network_predictor
from contrastive.pipeline.results import BINARY_METRICS, PRETRAINED_COLUMNS, Cell, KnnScores, NetworkCost


def best_threshold(scores: np.ndarray, truth: np.ndarray) -> float:
    """The probability threshold t (an item is called positive where its score >= t) with the highest F1 of the
    positive class on these items: every t between the lowest score that reaches it and the highest score below
    that one calls the same items positive, and the midpoint of the two is taken (the widest margin either
    side: the edge itself, the least-scored positive, overfits a small validation split). A tie of F1: the
    lowest such score, the one that finds more. 0.5 where the items hold no positive (nothing to read)."""
    from sklearn.metrics import precision_recall_curve

    if not truth.any():
        return 0.5
    precision, recall, thresholds = precision_recall_curve(truth, scores)  # thresholds ascending
    f1 = 2 * precision[:-1] * recall[:-1] / np.clip(precision[:-1] + recall[:-1], 1e-12, None)
    edge = float(thresholds[int(np.argmax(f1))])
    below = scores[scores < edge]
    return (edge + float(below.max())) / 2 if len(below) else edge


def validation_thresholds(probs: dict[str, np.ndarray], labels: torch.Tensor, positive: int) -> dict[str, float]:
    """Every column's F1 threshold, chosen on its validation probabilities (validation_probabilities)."""
    truth = labels.numpy() == positive
    return {column: best_threshold(p[:, positive], truth) for column, p in probs.items()}


def binary_scores(probs: np.ndarray, labels: torch.Tensor, positive: int, threshold: float) -> dict[str, float]:
    """F1 of the positive class, called where its probability reaches `threshold` (chosen on validation), and
    the area under its precision-recall curve (scikit-learn's average precision; 0 without a positive item)."""
    from sklearn.metrics import average_precision_score, f1_score

    truth = labels.numpy() == positive
    return {"f1": float(f1_score(truth, probs[:, positive] >= threshold, zero_division=0)),
            "pr_auc": float(average_precision_score(truth, probs[:, positive])) if truth.any() else 0.0}


def validation_probabilities(columns: dict[str, Predictor], val, log) -> dict[str, np.ndarray]:
    """Each column's class probabilities on the validation split (what its accuracy in the log and its F1
    threshold are read from); a baseline that cannot run on this data (e.g. images read file by file) is
    dropped from `columns` with a line in the log."""
    probs = {}
    for column in list(columns):
        try:
            probs[column] = columns[column](val)
        except ContrastiveError as e:
            if column in PRETRAINED_COLUMNS or column == "supervised":
                raise
            log(f"  baseline {column} left out: {e}")
            del columns[column]
    return probs


def validation_scores(probs: dict[str, np.ndarray], labels: torch.Tensor) -> dict[str, float]:
    """Each column's validation accuracy, from its validation_probabilities."""
    return {column: accuracy(p, labels) for column, p in probs.items()}


def final_scores(per_draw: list[dict[str, Predictor]], test, positive: int | None,
                 thresholds: list[dict[str, float]] | None = None) -> tuple[dict[str, Cell], float | None]:
    """The test numbers of one label fraction, read once: every column on every draw (accuracy; with a
    positive class, F1 at the draw's threshold for the column, chosen on validation, and PR-AUC), and the
    positive class's share of the test split (None without one: what the always-positive floor reads)."""
    values: dict[str, dict[str, list[float]]] = {}
    for d, columns in enumerate(per_draw):
        for column, predict in columns.items():
            probs = predict(test)
            scores = {"values": accuracy(probs, test.labels)}
            if positive is not None:
                scores.update(binary_scores(probs, test.labels, positive, thresholds[d][column]),
                              thresholds=thresholds[d][column])
            for metric, v in scores.items():
                values.setdefault(column, {}).setdefault(metric, []).append(v)
    cells = {column: Cell(tuple(v["values"]), *(tuple(v.get(m, ())) for m in (*BINARY_METRICS, "thresholds")))
             for column, v in values.items()}
    share = None if positive is None else float((test.labels == positive).double().mean())
    return cells, share


def network_costs(networks: dict[str, tuple[str, torch.nn.Module]], test, reader, device,
                  repeats: int = 3) -> dict[str, NetworkCost]:
    """name -> (backbone, network): each one's parameter count and the seconds it takes to predict the test
    split, the best of `repeats` rounds in which every network runs once in turn (a noisy machine slows
    them alike). Only timed: no score of these runs is kept."""
    import time

    best = {name: float("inf") for name in networks}
    for _ in range(repeats):
        for name, (_, network) in networks.items():
            t = time.perf_counter()
            network_predictor(network, reader, device)(test)
            best[name] = min(best[name], time.perf_counter() - t)
    return {name: NetworkCost(backbone, sum(p.numel() for p in network.parameters()), best[name])
            for name, (backbone, network) in networks.items()}


def raw_knn(modality, bank, queries, num_classes: int, k: int) -> float | None:
    """kNN top-1 on the raw inputs (the modality's vectors), where it has them."""
    bank_x, query_x = modality.raw_vectors(bank), modality.raw_vectors(queries)
    if bank_x is None or query_x is None:
        return None
    return knn_accuracy(bank_x, bank.labels, query_x, queries.labels, num_classes, k=k)


def final_knn(encoder, modality, bank, test, reader, device, num_classes: int, knn: KnnConfig) -> KnnScores:
    """The encoder's kNN top-1 on the test split (training items as the bank) beside the raw inputs'."""
    return KnnScores(knn.k, knn.temperature,
                     encoder_knn_accuracy(encoder, bank, test, num_classes, reader, device, knn.k, knn.temperature),
                     raw_knn(modality, bank, test, num_classes, knn.k))
