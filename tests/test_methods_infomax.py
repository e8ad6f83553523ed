"""Deep InfoMax (contrastive/methods/infomax.py): the JSD and NCE estimators against naive loops, the
loss on maps and sequences, the cross-view variant."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from contrastive.image.augment import RECIPES
from contrastive.losses import jsd_mutual_information, local_global_jsd_loss, local_global_nce_loss
from contrastive.methods import METHODS, infomax
from helpers import D64, TINY_OPTIONS, TokenEncoder, make_splits, multicrop_batch, rand, tiny_encoder


def softplus(x):
    return math.log1p(math.exp(x))


def test_jsd_estimator_closed_forms_and_naive_local_global():
    zero = torch.zeros(7, dtype=D64)
    torch.testing.assert_close(jsd_mutual_information(zero, zero), torch.tensor(0.0, dtype=D64))  # no information
    sep = jsd_mutual_information(torch.full((3,), 60.0, dtype=D64), torch.full((9,), -60.0, dtype=D64))
    torch.testing.assert_close(sep, torch.tensor(2 * math.log(2), dtype=D64))  # the bound's maximum, 2 log 2
    reversed_ = jsd_mutual_information(torch.full((3,), -5.0, dtype=D64), torch.full((9,), 5.0, dtype=D64))
    assert reversed_ < -8  # scores that swap the roles are penalised without bound

    n, d, l = 4, 3, 5
    local, global_ = rand(n, d, l), rand(n, d, seed=1)
    pos, neg = [], []
    for i in range(n):  # item i's locations
        for k in range(n):  # against item k's global feature
            for j in range(l):
                s = float(local[i, :, j] @ global_[k])
                (pos if i == k else neg).append(s)
    estimate = (sum(math.log(2) - softplus(-s) for s in pos) / len(pos)
                - sum(softplus(s) - math.log(2) for s in neg) / len(neg))
    torch.testing.assert_close(local_global_jsd_loss(local, global_), torch.tensor(-estimate, dtype=D64))
    assert len(pos) == n * l and len(neg) == n * (n - 1) * l


def test_local_global_nce_against_a_naive_loop_and_closed_forms():
    n, d, l = 4, 3, 5
    local, global_ = rand(n, d, l), rand(n, d, seed=1)
    terms = []
    for i in range(n):  # global feature i
        negatives = [float(local[k, :, m] @ global_[i]) for k in range(n) if k != i for m in range(l)]
        for j in range(l):  # its own location j is the positive
            logits = torch.tensor([float(local[i, :, j] @ global_[i])] + negatives, dtype=D64)
            terms.append(-torch.log_softmax(logits, 0)[0])
    torch.testing.assert_close(local_global_nce_loss(local, global_), torch.stack(terms).mean())
    # every score 0: each positive is one of 1 + (n - 1) l equal choices
    zero = local_global_nce_loss(torch.zeros(n, d, l, dtype=D64), torch.zeros(n, d, dtype=D64))
    torch.testing.assert_close(zero, torch.tensor(math.log(1 + (n - 1) * l), dtype=D64))
    # positives far above the negatives: the loss goes to 0
    one_hot = torch.eye(n, dtype=D64)[:, :, None].expand(n, n, l) * 30  # item i's locations point along axis i
    assert local_global_nce_loss(one_hot, torch.eye(n, dtype=D64)) < 1e-9
    with pytest.raises(ValueError, match="at least 2"):
        local_global_nce_loss(rand(1, d, l), rand(1, d))


def test_local_global_nce_stabilised_as_amdim_scores_it():
    n, d, l = 3, 4, 2
    local, global_ = rand(n, d, l) * 20, rand(n, d, seed=1) * 20  # raw scores far beyond the clip

    def score(k, m, i):  # AMDIM: scaled by sqrt(d), soft-clipped at 10
        return 10.0 * math.tanh(float(local[k, :, m] @ global_[i]) / math.sqrt(d) / 10.0)

    raw_squares = [(float(local[k, :, m] @ global_[i]) / math.sqrt(d)) ** 2
                   for i in range(n) for k in range(n) for m in range(l)]
    terms = []
    for i in range(n):
        negatives = [score(k, m, i) for k in range(n) if k != i for m in range(l)]
        for j in range(l):
            logits = torch.tensor([score(i, j, i)] + negatives, dtype=D64)
            terms.append(-torch.log_softmax(logits, 0)[0])
    expected = torch.stack(terms).mean() + 0.05 * sum(raw_squares) / len(raw_squares)
    torch.testing.assert_close(local_global_nce_loss(local, global_, stabilise=True), expected)
    # every score clipped to +-10: the ranking term is bounded by log(1 + (N-1) L) + 20
    assert local_global_nce_loss(local, global_, stabilise=True) - 0.05 * sum(raw_squares) / len(raw_squares) \
        <= math.log(1 + (n - 1) * l) + 20


def test_infomax_loss_of_its_parts_on_maps_and_sequences():
    enc, d = tiny_encoder()
    model = infomax.build(infomax.Options(embed_dim=8, embed_hidden=8), enc, d)
    x = multicrop_batch()[0]
    with torch.no_grad():
        local = model.local_embed(enc.local_features(x).flatten(2))
        expected = local_global_jsd_loss(local, model.global_embed(enc(x)))
    torch.testing.assert_close(model([x])[0], expected)
    seq = infomax.build(infomax.Options(embed_dim=8, embed_hidden=8), TokenEncoder(), 8)
    loss, _ = seq([torch.randint(0, 11, (4, 9))])
    loss.backward()
    assert seq.encoder.embed.weight.grad.abs().max() > 0
    with pytest.raises(ValueError, match="local_features"):
        infomax.build(infomax.Options(), nn.Linear(3, 3), 3)
    nce = infomax.build(infomax.Options(embed_dim=8, embed_hidden=8, estimator="nce"), enc, d)
    with torch.no_grad():
        local = nce.local_embed(enc.local_features(x).flatten(2))
        expected = local_global_nce_loss(local, nce.global_embed(enc(x)))
    torch.testing.assert_close(nce([x])[0], expected)


def test_infomax_cross_view_scores_each_views_locations_against_the_other_global():
    from contrastive.methods import view_spec

    enc, d = tiny_encoder()
    model = infomax.build(infomax.Options(embed_dim=8, embed_hidden=8, estimator="nce", cross_view=True), enc, d)
    x1, x2 = multicrop_batch()[:2]
    with torch.no_grad():
        (l1, g1), (l2, g2) = model.embed(x1), model.embed(x2)
        expected = (local_global_nce_loss(l1, g2) + local_global_nce_loss(l2, g1)) / 2
        assert not torch.allclose(expected, local_global_nce_loss(l1, g1))  # not the one-view loss
    torch.testing.assert_close(model([x1, x2])[0], expected)
    with pytest.raises(ValueError, match="two views"):
        model([x1])
    stable = infomax.build(infomax.Options(embed_dim=8, embed_hidden=8, estimator="nce", cross_view=True,
                                           stabilise=True), enc, d)
    stable.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(stable([x1, x2])[0], (local_global_nce_loss(l1, g2, stabilise=True)
                                                         + local_global_nce_loss(l2, g1, stabilise=True)) / 2)
    with pytest.raises(ValueError, match="stabilise applies to estimator nce"):
        infomax.build(infomax.Options(embed_dim=8, embed_hidden=8, stabilise=True), enc, d)
    from contrastive.errors import ContrastiveError
    from contrastive.methods import resolve_options

    with pytest.raises(ContrastiveError, match="add --estimator nce or drop --stabilise"):
        resolve_options("infomax", {"stabilise": True})  # the command line's check, before any training
    assert resolve_options("infomax", {"stabilise": True, "estimator": "nce"}).stabilise is True
    one_view = infomax.build(infomax.Options(embed_dim=8, embed_hidden=8, estimator="nce"), enc, d)
    one_view.load_state_dict(model.state_dict())
    with torch.no_grad():  # off: a second view, were one given, is not read
        torch.testing.assert_close(one_view([x1, x2])[0], local_global_nce_loss(l1, g1))
    # the option picks the views the data modality makes: one as published, two for AMDIM
    one = view_spec("infomax", infomax.Options(cross_view=False))
    assert (one.family, one.global_views, one.local_views, one.method) == ("light", 1, 0, "infomax")
    two = view_spec("infomax", infomax.Options(cross_view=True))
    assert two.global_views == 2 and len(RECIPES[two.family](16, 1)) == 2
    assert view_spec("simclr", METHODS["simclr"].Options()).family == "simclr"


def test_infomax_cross_view_gets_two_views_from_the_training_loop(tmp_path):
    from contrastive.config import KnnConfig, PretrainConfig
    from contrastive.train import pretrain

    seen = []
    original = infomax.DeepInfoMax.forward

    def spy(self, views):
        seen.append(len(views))
        return original(self, views)

    infomax.DeepInfoMax.forward = spy
    try:
        for cross_view in (False, True):
            cfg = PretrainConfig(method="infomax", backbone="small_cnn", epochs=1, batch_size=32, lr=0.01,
                                 out=str(tmp_path / f"run{cross_view}"),
                                 method_options={**TINY_OPTIONS["infomax"], "cross_view": cross_view},
                                 knn=KnnConfig(k=10, every=0))
            pretrain(cfg, data=make_splits(), log=lambda *_: None)
    finally:
        infomax.DeepInfoMax.forward = original
    assert seen == [1, 1, 2, 2]  # two steps of 32 items per run
