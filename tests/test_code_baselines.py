"""The code baselines a sceptic runs (contrastive.code.baselines) on toy sets with known answers: class weighting
finds a rare vulnerable class, C is chosen on validation, self-training reads the unlabelled pool, and the
TF-IDF space is fitted once per pool over the whole token list."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from contrastive.code import baselines
from contrastive.code.data import CodeSet
from contrastive.errors import ContrastiveError


def items(texts: list[str], labels=None) -> CodeSet:
    """Functions known by their text only: every token tensor is the same (all padding)."""
    return CodeSet(torch.zeros(len(texts), 1, 4, dtype=torch.int64), labels, texts=texts)


def rare_positives():
    """3 positives sharing "strcpy" among 30 negatives, every function 3-4 of 12 filler tokens; queries: one
    with strcpy, one without."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(12)]
    neg = [" ".join(rng.sample(words, 4)) for _ in range(30)]
    pos = [" ".join(rng.sample(words, 3) + ["strcpy"]) for _ in range(3)]
    labeled = items(neg + pos, [0] * 30 + [1] * 3)
    pool = items(labeled.texts + [" ".join(rng.sample(words, 4)) for _ in range(20)])
    queries = items([" ".join(rng.sample(words, 3) + ["strcpy"]), " ".join(rng.sample(words, 4))], [1, 0])
    return labeled, pool, queries


def test_class_weighting_calls_a_query_with_the_minority_token_positive_where_plain_weights_do_not():
    labeled, pool, queries = rare_positives()
    at_default = dict(grid=(1.0,))  # scikit-learn's default C, so the weighting alone differs
    weighted = baselines.tfidf(labeled, pool, queries, 2, 0, 1, **at_default)(queries)
    plain = baselines.tfidf(labeled, pool, queries, 2, 0, 1, class_weight=None, **at_default)(queries)
    assert weighted.argmax(axis=1).tolist() == [1, 0]  # the strcpy query is called vulnerable
    assert plain.argmax(axis=1).tolist() == [0, 0]  # 3 of 33: without the weights the majority wins
    assert weighted[0, 1] > 0.6 > 0.2 > plain[0, 1]
    assert np.allclose(weighted.sum(axis=1), 1.0)


def skewed():
    """"common" in 8 of 9 positives and 3 of 9 negatives; "rare" in one positive only. A strong penalty (small
    C) trusts the frequent token, a weak one (large C) the perfectly separating rare one."""
    labeled = items(["common"] * 8 + ["rare"] + ["common"] * 3 + ["other"] * 6, [1] * 9 + [0] * 9)
    return labeled, items(["common", "rare"])


@pytest.mark.parametrize("val_labels,large_c", [([0, 1], True), ([1, 0], False)])
def test_c_is_the_one_validation_favours(val_labels, large_c):
    labeled, queries = skewed()
    val = items(["common", "rare"], val_labels)
    space = baselines.space_of(labeled)
    _, c = baselines.chosen_logistic(space(labeled), labeled.labels.numpy(), space(val), val.labels.numpy(), 2, 0, 1)
    assert (c >= 10) == large_c
    probs = baselines.tfidf(labeled, labeled, val, 2, 0, 1)(queries)[:, 1]
    assert (probs[1] > probs[0]) == large_c  # the fit the pipeline gets ranks as its validation asked


def test_without_a_positive_class_c_is_chosen_by_accuracy():
    labeled, _ = skewed()
    val = items(["common", "rare"], [1, 0])
    assert baselines.val_measure(np.array([[0.4, 0.6], [0.7, 0.3]]), val.labels.numpy(), None) == 1.0
    assert baselines.val_measure(np.array([[0.4, 0.6], [0.3, 0.7]]), val.labels.numpy(), None) == 0.5
    # with a positive class: PR-AUC, which ranks alone (both predictions rank the positive first)
    assert baselines.val_measure(np.array([[0.4, 0.6], [0.45, 0.55]]), val.labels.numpy(), 1) == 1.0


def test_self_training_learns_a_token_only_the_unlabelled_pool_ties_to_a_class():
    labeled = items(["x a1", "x a2", "z b1", "z b2", "z b3"], [1, 1, 0, 0, 0])
    pool = items(labeled.texts + ["x y"] * 20 + ["z w"] * 40)  # y comes with x, w with z, unlabelled
    val, queries = items(["x", "z"], [1, 0]), items(["y", "w"])
    plain = baselines.tfidf(labeled, pool, val, 2, 0, 1)(queries)
    assert plain[0, 1] == pytest.approx(plain[1, 1])  # no labelled function holds y or w
    self_trained = baselines.tfidf_self_training(labeled, pool, val, 2, 0, 1)(queries)
    assert self_trained[0, 1] > 0.5 > self_trained[1, 1]


def test_confident_items_are_class_balanced_and_skip_the_labelled_ones():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55], [0.1, 0.9]])
    exclude = np.array([False, False, False, False, False, True])
    picked, labels = baselines.confident(probs, share=2 / 3, exclude=exclude)  # 2 a class
    assert picked.tolist() == [0, 1, 3, 4] and labels.tolist() == [0, 0, 1, 1]


def test_the_space_is_fitted_once_per_pool_on_the_whole_token_list(monkeypatch):
    made = []
    real = baselines.TokenSpace
    monkeypatch.setattr(baselines, "TokenSpace", lambda pool: made.append(pool) or real(pool))
    labeled, pool, queries = rare_positives()
    for draw in (range(0, 33), range(1, 33)):  # two draws of the same pool
        baselines.tfidf(labeled.subset(list(draw)), pool, queries, 2, 0, 1)(queries)
    baselines.tfidf_self_training(labeled, pool, queries, 2, 0, 1)
    assert made == [pool]
    filler = " ".join(["w0"] * 600)  # far past any encoder's max_tokens
    long = items([filler + " strcpy", filler], [1, 0])
    vocabulary = baselines.space_of(items([filler + " strcpy", filler + " memcpy"])).vectorizer.vocabulary_
    assert {"strcpy", "w0 strcpy", "memcpy"} <= set(vocabulary)  # the tokens as written, bigrams too
    assert baselines.space_of(pool)(long)[0].nnz > baselines.space_of(pool)(long)[1].nnz


def test_functions_without_text_get_a_one_line_error():
    with pytest.raises(ContrastiveError, match="source text"):
        baselines.tfidf(items(["", ""], [0, 1]), items(["", ""]), items([""], [1]), 2, 0, 1)
