"""Scoring the columns: validation accuracy for the log and the choices, and the test numbers, read once.

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


def binary_scores(probs: np.ndarray, labels: torch.Tensor, positive: int) -> dict[str, float]:
    """F1 of the positive class (predicted by argmax) and the area under its precision-recall curve
    (scikit-learn's average precision)."""
    from sklearn.metrics import average_precision_score, f1_score

    truth = labels.numpy() == positive
    return {"f1": float(f1_score(truth, probs.argmax(axis=1) == positive, zero_division=0)),
            "pr_auc": float(average_precision_score(truth, probs[:, positive])) if truth.any() else 0.0}


def validation_scores(columns: dict[str, Predictor], val, log) -> dict[str, float]:
    """Each column's validation accuracy; a baseline that cannot run on this data (e.g. images read file
    by file) is dropped from `columns` with a line in the log."""
    scores = {}
    for column in list(columns):
        try:
            scores[column] = accuracy(columns[column](val), val.labels)
        except ContrastiveError as e:
            if column in PRETRAINED_COLUMNS or column == "supervised":
                raise
            log(f"  baseline {column} left out: {e}")
            del columns[column]
    return scores


def final_scores(per_draw: list[dict[str, Predictor]], test, positive: int | None) -> dict[str, Cell]:
    """The test numbers of one label fraction, read once: every column on every draw (accuracy; with a
    positive class, binary detection, F1 and PR-AUC too)."""
    values: dict[str, dict[str, list[float]]] = {}
    for columns in per_draw:
        for column, predict in columns.items():
            probs = predict(test)
            scores = {"values": accuracy(probs, test.labels)}
            if positive is not None:
                scores.update(binary_scores(probs, test.labels, positive))
            for metric, v in scores.items():
                values.setdefault(column, {}).setdefault(metric, []).append(v)
    return {column: Cell(tuple(v["values"]), *(tuple(v.get(m, ())) for m in BINARY_METRICS))
            for column, v in values.items()}


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
