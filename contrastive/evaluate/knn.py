"""Weighted kNN classifier on frozen features (Wu et al. 2018, arXiv:1805.01978).

Each of the k nearest training features (cosine similarity s) votes for its class with
weight exp(s / T); the prediction is the class with the largest total. k=200 and T=0.1
are the values of Wu et al. and of the MoCo CIFAR demo's monitor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_votes(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, num_classes: int,
              k: int = 200, temperature: float = 0.1, chunk: int = 1024) -> torch.Tensor:
    """Each query's weighted votes per class (M, C), summing to 1 per row: the kNN classifier's
    class probabilities. Bank (N, D) and queries (M, D) are normalised inside."""
    bank = F.normalize(bank.float(), dim=1)
    queries = F.normalize(queries.float(), dim=1)
    k = min(k, bank.shape[0])
    out = []
    for q in queries.split(chunk):
        sim, idx = (q @ bank.T).topk(k, dim=1)  # (m, k) similarities of the k nearest
        weights = ((sim - sim[:, :1]) / temperature).exp()  # exp(s / T), scaled by the nearest's: no overflow
        votes = torch.zeros(q.shape[0], num_classes, device=q.device)
        votes.scatter_add_(1, bank_labels[idx], weights)  # (m, C) weighted votes per class
        out.append(votes / votes.sum(dim=1, keepdim=True))
    return torch.cat(out) if out else torch.zeros(0, num_classes)


def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, num_classes: int,
                k: int = 200, temperature: float = 0.1, chunk: int = 1024) -> torch.Tensor:
    """Predicted class (M,) for each query (M, D) from a feature bank (N, D); both normalised inside."""
    return knn_votes(bank, bank_labels, queries, num_classes, k, temperature, chunk).argmax(dim=1)


def knn_accuracy(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, query_labels: torch.Tensor,
                 num_classes: int, k: int = 200, temperature: float = 0.1) -> float:
    """Top-1 accuracy of the weighted kNN classifier, a fraction in [0, 1]."""
    preds = knn_predict(bank, bank_labels, queries, num_classes, k, temperature)
    return (preds == query_labels).float().mean().item()


def encoder_knn_accuracy(encoder, bank_items, query_items, num_classes: int, reader, device, k: int,
                         temperature: float) -> float:
    """kNN top-1 of a frozen encoder: `bank_items` (labelled) as the memory bank, `query_items` as queries;
    `reader` (contrastive.modality.Reader) says how the encoder reads them."""
    from contrastive.evaluate.features import extract_features

    bank, bank_y = extract_features(encoder, bank_items, reader, device)
    query, query_y = extract_features(encoder, query_items, reader, device)
    return knn_accuracy(bank, bank_y, query, query_y, num_classes, k, temperature)
