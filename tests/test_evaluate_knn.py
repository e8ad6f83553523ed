"""The weighted kNN classifier (contrastive/evaluate/knn.py)."""

import torch

from contrastive.evaluate.knn import knn_accuracy, knn_predict


def test_knn_weighted_vote_closed_form():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    q = torch.tensor([[1.0, 0.05], [0.05, 1.0]])
    assert knn_predict(bank, labels, q, 2, k=3, temperature=0.1).tolist() == [0, 1]
    # with k=1 only the nearest votes
    assert knn_predict(bank, labels, torch.tensor([[0.6, 0.8]]), 2, k=1).tolist() == [1]
    assert knn_accuracy(bank, labels, q, torch.tensor([0, 0]), 2, k=3) == 0.5


def test_knn_weights_make_near_neighbours_count_more():
    # two far class-0 neighbours against one very close class-1 neighbour
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([1, 0, 0])
    q = torch.tensor([[1.0, 0.3]])
    assert knn_predict(bank, labels, q, 2, k=3, temperature=0.1).item() == 1
    assert knn_predict(bank, labels, q, 2, k=3, temperature=100.0).item() == 0  # ~uniform votes: majority
