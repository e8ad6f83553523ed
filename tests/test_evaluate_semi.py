"""FixMatch consistency training (contrastive.evaluate.semi): pseudo-labels from the weak view train the strong
view only above the threshold, the labelled term is there, and the items a batch is drawn from."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastive.errors import ContrastiveError
from contrastive.evaluate.fit import Budget
from contrastive.evaluate.semi import MaskStats, consistency_train, fixmatch_items, fixmatch_objective


class Recording(nn.Module):
    """Logits read off the input's first feature row (so a test sets them), every input it saw recorded."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.scale * x


def naive_fixmatch(strong, weak, labels, threshold, weight):
    """The paper's Algorithm 1 for one batch, item by item: labelled CE on the weak view; for each unlabelled
    item, CE(strong, argmax p(weak)) where max p(weak) >= threshold, averaged over all unlabelled items."""
    labelled = [i for i in range(len(labels)) if labels[i] >= 0]
    unlabelled = [i for i in range(len(labels)) if labels[i] < 0]
    sup = sum(F.cross_entropy(weak[i:i + 1], labels[i:i + 1]) for i in labelled) / len(labelled)
    unsup = 0.0
    for i in unlabelled:
        p = torch.softmax(weak[i], dim=0)
        if p.max() >= threshold:
            unsup = unsup + F.cross_entropy(strong[i:i + 1], p.argmax().reshape(1))
    return sup + weight * unsup / len(unlabelled)


def test_the_loss_matches_the_papers_algorithm_and_pseudo_labels_come_from_the_weak_view():
    weak = torch.tensor([[5.0, 0.0, 0.0],   # labelled (class 1)
                         [6.0, 0.0, 0.0],   # confident: pseudo-label 0
                         [0.2, 0.1, 0.0],   # unsure: no pseudo-label
                         [0.0, 0.0, 9.0]])  # confident: pseudo-label 2
    strong = torch.tensor([[0.0, 1.0, 0.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]], requires_grad=True)
    labels = torch.tensor([1, -1, -1, -1])
    model = Recording()
    loss = fixmatch_objective(model, threshold=0.95, weight=0.5)(strong, labels, weak)
    assert loss.item() == pytest.approx(naive_fixmatch(strong, weak, labels, 0.95, 0.5).item(), rel=1e-6)
    # the model reads the weak view only: the whole batch for the pseudo-labels, then the labelled items (here one,
    # which BatchNorm cannot normalise alone: the whole batch again)
    assert len(model.seen) == 2 and all(torch.equal(x, weak) for x in model.seen)
    loss.backward()
    touched = strong.grad.abs().sum(dim=1) > 0
    assert touched.tolist() == [False, True, False, True]  # the strong view trains only confident unlabelled items
    # the pseudo-label is the weak view's argmax: item 1's strong logits are pulled toward class 0, not class 1
    assert strong.grad[1, 0] < 0 < strong.grad[1, 1]
    assert model.scale.grad is not None and model.scale.grad != 0  # the labelled term reaches the model


def test_a_threshold_above_every_confidence_leaves_the_labelled_term_alone():
    weak = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.0]])
    strong = torch.zeros(4, 2, requires_grad=True)
    labels = torch.tensor([0, -1, -1, 1])
    stats, model = MaskStats(), Recording()
    loss = fixmatch_objective(model, threshold=0.999, stats=stats)(strong, labels, weak)
    labelled = labels >= 0
    assert loss.item() == pytest.approx(F.cross_entropy(weak[labelled], labels[labelled]).item())
    assert (stats.unlabelled, stats.confident) == (2, 0)
    assert torch.equal(model.seen[1], weak[labelled])  # two labelled items: they are read on their own


def test_the_items_hold_every_item_unlabelled_then_the_labelled_ones_repeated(tiny_data):
    pool = tiny_data.train  # 64 items
    idx = torch.tensor([0, 5, 10, 15])
    items = fixmatch_items(pool, idx, ratio=4)
    repeats = math.ceil(64 / (4 * 4))
    assert len(items) == 64 + 4 * repeats
    assert (items.labels[:64] == -1).all()  # the labels of the pool are hidden, the labelled items' too
    assert torch.equal(items.labels[64:], pool.labels[idx].repeat(repeats))
    assert torch.equal(items.images[64:], pool.images[idx].repeat(repeats, 1, 1, 1))
    with pytest.raises(ContrastiveError, match="needs labelled items"):
        fixmatch_items(pool, torch.tensor([], dtype=torch.int64))


def test_consistency_training_reads_every_unlabelled_item_once_a_pass_and_moves_the_network(tiny_data):
    from contrastive.evaluate.classifier import random_classifier
    from contrastive.modality import modality_of, reader_for

    modality = modality_of(tiny_data)
    reader = reader_for(tiny_data, modality.resolve(modality.options({}), tiny_data))
    model = random_classifier(reader, "small_cnn", tiny_data.num_classes, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    history = []
    stats = consistency_train(model, tiny_data.train, torch.arange(0, 64, 8), reader, threshold=0.0,
                              budget=Budget(epochs=2, min_steps=0, batch_size=16, lr=0.05), history=history)
    assert stats.unlabelled == 2 * 64 and stats.confident == stats.unlabelled  # threshold 0: every item passes
    assert len(history) == 2
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
