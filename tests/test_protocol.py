"""The evaluation protocol (contrastive.protocol) and the raw-input baselines (contrastive.evaluate.baselines)."""

import json

import numpy as np
import pytest
import torch

from contrastive.errors import ContrastiveError
from contrastive.evaluate.baselines import knn_probabilities, label_spreading_probabilities
from contrastive.protocol import best_on_validation, label_draws, mean_sd, summary, validation_split

LABELS = torch.arange(10).repeat_interleave(40)[torch.randperm(400, generator=torch.Generator().manual_seed(3))]


def test_validation_split_is_class_balanced_disjoint_complete_and_fixed_by_its_seed():
    train, val = validation_split(LABELS, 0.1, seed=0)
    assert len(set(train.tolist()) & set(val.tolist())) == 0
    assert sorted(train.tolist() + val.tolist()) == list(range(400))
    assert torch.bincount(LABELS[val], minlength=10).tolist() == [4] * 10  # 10% of 40 in every class
    assert torch.equal(validation_split(LABELS, 0.1, seed=0)[1], val)
    assert not torch.equal(validation_split(LABELS, 0.1, seed=1)[1], val)
    with pytest.raises(ContrastiveError, match="validation fraction"):
        validation_split(LABELS, 1.0, seed=0)


def test_label_draws_are_balanced_distinct_across_draws_and_reproducible():
    draws = label_draws(LABELS, 0.1, 5, seed=0)
    assert len(draws) == 5
    for d in draws:
        assert torch.bincount(LABELS[d], minlength=10).tolist() == [4] * 10
        assert d.tolist() == sorted(d.tolist())
    assert len({tuple(d.tolist()) for d in draws}) == 5  # no two draws alike
    again = label_draws(LABELS, 0.1, 5, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(draws, again))
    assert not torch.equal(label_draws(LABELS, 0.1, 1, seed=7)[0], draws[0])
    assert len(label_draws(LABELS, 1.0, 5, seed=0)) == 1  # all labels: one draw, whatever was asked


def test_summary_is_mean_and_sample_sd_and_the_table_cell_shows_both():
    stats = summary([0.5, 0.7, 0.9])
    assert stats["mean"] == pytest.approx(0.7) and stats["sd"] == pytest.approx(0.2)  # sqrt(0.08 / 2)
    assert stats["values"] == [0.5, 0.7, 0.9]
    assert summary([0.3])["sd"] == 0.0
    assert mean_sd(stats) == "0.700 ± 0.200" and mean_sd(summary([0.3])) == "0.300"
    assert best_on_validation({0.1: 0.8, 0.3: 0.9, 1.0: 0.9}) == 0.3  # a tie goes to the first


def test_knn_baseline_on_a_toy_set_gives_its_known_answer():
    # Two labelled points per class on the axes; a query near each axis belongs to that axis's class.
    labeled = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 1])
    queries = torch.tensor([[1.0, 0.05], [0.02, 1.0], [1.0, 1.0]])
    probs = knn_probabilities(labeled, labels, queries, 2, k=4, temperature=0.1)
    assert probs.shape == (3, 2) and np.allclose(probs.sum(axis=1), 1)
    assert probs[0, 0] > 0.99 and probs[1, 1] > 0.99
    assert probs[2, 0] == pytest.approx(0.5, abs=1e-6)  # equidistant from both classes: an even vote
    # k=1: the single nearest labelled point decides outright
    assert knn_probabilities(labeled, labels, queries[:2], 2, k=1).tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_label_spreading_follows_the_unlabelled_items_where_knn_on_the_labels_cannot():
    # Directions on the unit circle (cosine similarity is what both baselines use). Class 0: a labelled item
    # at 0 degrees and a chain of unlabelled ones up to 30; class 1: labelled at 60, its chain up to 90.
    # The query at 33 degrees is nearer class 1's labelled item (27 against 33 degrees), but its neighbours
    # in the graph are class 0's chain, which carries class 0's label to it.
    def at(degrees):
        a = np.deg2rad(np.asarray(degrees, dtype=np.float64))
        return torch.tensor(np.stack([np.cos(a), np.sin(a)], 1), dtype=torch.float32)

    labeled, labels = at([0, 60]), torch.tensor([0, 1])
    pool = at(list(range(3, 31, 3)) + list(range(63, 91, 3)))
    query = at([33])
    assert knn_probabilities(labeled, labels, query, 2, k=1)[0].argmax() == 1  # the labelled items alone: wrong
    spread = label_spreading_probabilities(labeled, labels, pool, query, 3, neighbours=5)
    assert spread.shape == (1, 3) and spread[0].argmax() == 0
    assert spread[0, 2] == 0  # a class no labelled item has gets nothing


def test_the_spreading_teacher_labels_any_input_by_its_neighbours_spread_labels():
    from contrastive.evaluate.teachers import AveragedTeacher, spreading_teacher

    def at(degrees):
        a = np.deg2rad(np.asarray(degrees, dtype=np.float64))
        return torch.tensor(np.stack([np.cos(a), np.sin(a)], 1), dtype=torch.float32)

    # The chain of the label-spreading test, as a training set whose items 0 and 10 are labelled.
    train = torch.cat([at([0]), at(list(range(3, 31, 3))), at([60]), at(list(range(63, 91, 3)))])
    idx = torch.tensor([0, 11])
    teacher = spreading_teacher(torch.nn.Identity(), train, idx, torch.tensor([0, 1]), 3)
    assert not teacher.training
    log_p = teacher(at([33, 0, 88]))
    assert torch.isfinite(log_p).all() and log_p.argmax(1).tolist() == [0, 0, 1]  # 33 degrees: class 0's chain
    assert torch.allclose(log_p.exp().sum(1), torch.ones(3), atol=1e-4)

    g = torch.Generator().manual_seed(0)
    a, b = torch.nn.Linear(2, 3), torch.nn.Linear(2, 3)
    x = torch.randn(5, 2, generator=g)
    mean = (torch.softmax(a(x), 1) + torch.softmax(b(x), 1)) / 2
    assert torch.allclose(AveragedTeacher(a, b)(x), mean.log(), atol=1e-6)


def test_a_tie_on_validation_goes_to_the_higher_likelihood_then_to_the_first():
    from contrastive.protocol import ValidationScore

    tied = {"finetune": ValidationScore(1.0, -0.30), "semi": ValidationScore(1.0, -0.05),
            "worse": ValidationScore(0.975, -0.01)}
    assert best_on_validation(tied) == "semi"  # all right on 40 items: the surer model wins
    assert best_on_validation({"a": 0.5, "b": 0.5}) == "a"  # plain floats: the first
    assert float(tied["semi"]) == 1.0 and json.loads(json.dumps(tied)) == {"finetune": 1.0, "semi": 1.0,
                                                                              "worse": 0.975}


# --- the validation split by group (issue 24: Juliet's flow variants of one flaw are near-twins) -----------

GROUPS = [f"flaw{i % 57}" for i in range(400)]  # 57 groups of 7 or 8 items, each mixing classes


def test_a_group_aware_validation_split_keeps_every_group_on_one_side():
    train, val = validation_split(LABELS, 0.2, seed=0, groups=GROUPS)
    assert sorted(train.tolist() + val.tolist()) == list(range(400))
    assert not {GROUPS[i] for i in train.tolist()} & {GROUPS[i] for i in val.tolist()}
    assert abs(len(val) - 80) <= 8  # the fraction, overshot by less than one group (8 items)
    assert set(LABELS[val].tolist()) == set(range(10)) and set(LABELS[train].tolist()) == set(range(10))
    assert torch.equal(validation_split(LABELS, 0.2, seed=0, groups=GROUPS)[1], val)
    assert not torch.equal(validation_split(LABELS, 0.2, seed=1, groups=GROUPS)[1], val)


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.3])
def test_with_one_item_per_group_the_validation_size_is_the_fraction(fraction):
    by_item = [str(i) for i in range(400)]
    val = validation_split(LABELS, fraction, seed=0, groups=by_item)[1]
    assert round(fraction * 400) <= len(val) <= round(fraction * 400) + 10  # + a group per missing class
    assert set(LABELS[val].tolist()) == set(range(10))


def test_a_class_the_random_groups_missed_is_brought_in_and_training_keeps_every_class():
    # 20 large groups of class 0 and two small ones of class 1: the first groups drawn reach the fraction
    # alone, so validation would hold no class 1 until one of its groups is added.
    labels = torch.tensor([0] * 200 + [1] * 4)
    groups = [f"zero{i // 10}" for i in range(200)] + ["one_a", "one_a", "one_b", "one_b"]
    for seed in range(5):
        train, val = validation_split(labels, 0.1, seed, groups=groups)
        assert set(labels[val].tolist()) == {0, 1} and set(labels[train].tolist()) == {0, 1}
        assert {groups[i] for i in val.tolist() if labels[i] == 1} in ({"one_a"}, {"one_b"})
    alone = validation_split(labels[:202], 0.1, 0, groups=groups[:202])  # class 1 in one group only
    assert set(labels[alone[0]].tolist()) == {0, 1} and set(labels[alone[1]].tolist()) == {0}


def test_groups_must_name_every_item():
    with pytest.raises(ContrastiveError, match="one group per item"):
        validation_split(LABELS, 0.1, seed=0, groups=GROUPS[:-1])
