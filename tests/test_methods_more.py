"""DINO, SwAV, Deep InfoMax and CPC, multi-crop views and the small ViT: each pure loss against a naive
reference written from the paper's pseudocode and closed-form values, each method's forward against
its parts, its schedules and stop-gradients, two gloo processes against one (DINO's center, SwAV's
Sinkhorn), CPC on token sequences, and each method through the registry and the training loop."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import make_splits
from contrastive import distributed as dist
from contrastive.heads import mlp
from contrastive.image.augment import RECIPES, method_recipes
from contrastive.image.backbones import build_backbone
from contrastive.image.batch_augment import BatchAugment
from contrastive.losses import (cpc_info_nce, dino_loss, jsd_mutual_information, local_global_jsd_loss,
                                local_global_nce_loss, sinkhorn_knopp, swapped_prediction_loss)
from contrastive.methods import METHODS, cpc, dino, infomax, swav
from contrastive.methods.crops import by_size
from contrastive.momentum import cosine_ema

from test_distributed import WORLD, run_two_ranks  # noqa: E402
from test_methods import tiny_encoder  # noqa: E402

NEW = ["dino", "swav", "infomax", "cpc"]
D64 = torch.float64


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D64)


# --- SwAV: Sinkhorn-Knopp and the swapped prediction ----------------------------------------------


def naive_sinkhorn(scores, eps, iterations):
    """SwAV Algorithm 1, entry by entry: Q = exp(C^T Z / eps), rows to 1/K, columns to 1/B, codes B Q^T."""
    b, k = scores.shape
    q = [[math.exp(scores[i, j].item() / eps) for i in range(b)] for j in range(k)]  # (K, B)
    total = sum(map(sum, q))
    q = [[v / total for v in row] for row in q]
    for _ in range(iterations):
        q = [[v / sum(row) / k for v in row] for row in q]
        cols = [sum(q[j][i] for j in range(k)) for i in range(b)]
        q = [[q[j][i] / cols[i] / b for i in range(b)] for j in range(k)]
    return torch.tensor([[q[j][i] * b for j in range(k)] for i in range(b)], dtype=D64)


@pytest.mark.parametrize("b, k, eps, iterations", [(6, 4, 0.05, 3), (5, 7, 0.5, 1), (8, 3, 0.1, 10)])
def test_sinkhorn_matches_the_papers_algorithm(b, k, eps, iterations):
    scores = F.normalize(rand(b, 16), dim=1) @ F.normalize(rand(k, 16, seed=1), dim=1).T  # cosines, as in SwAV
    codes = sinkhorn_knopp(scores, eps, iterations)
    torch.testing.assert_close(codes, naive_sinkhorn(scores, eps, iterations))
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(b, dtype=D64))  # each code is a distribution


def test_sinkhorn_closed_forms_and_equipartition():
    # equal scores: every code is uniform over the prototypes
    torch.testing.assert_close(sinkhorn_knopp(torch.full((5, 4), 0.3, dtype=D64)), torch.full((5, 4), 0.25, dtype=D64))
    # with enough iterations each prototype gets B / K of the batch's mass, however skewed the scores
    scores = rand(12, 3) * 0.2 + torch.tensor([0.5, 0.0, -0.5], dtype=D64)  # prototype 0 wins every argmax
    assert (scores.argmax(dim=1) == 0).all()
    use = sinkhorn_knopp(scores, 0.05, 200).sum(dim=0)
    torch.testing.assert_close(use, torch.full((3,), 4.0, dtype=D64), atol=1e-6, rtol=0)
    assert (sinkhorn_knopp(scores, 0.05, 0).sum(dim=0)[0] > 11)  # no iteration: the argmax takes nearly all


def naive_swapped(scores, codes, t):
    total = 0.0
    for i, q in enumerate(codes):
        sub = 0.0
        for v, s in enumerate(scores):
            if v == i:
                continue
            p = torch.softmax(s / t, dim=1)
            sub += sum(-(q[n] * torch.log(p[n])).sum() for n in range(len(q))) / len(q)
        total += sub / (len(scores) - 1)
    return total / len(codes)


@pytest.mark.parametrize("crops, t", [(2, 0.1), (4, 0.5), (5, 1.0)])
def test_swapped_prediction_matches_naive_and_closed_forms(crops, t):
    scores = [rand(6, 5, seed=s) for s in range(crops)]
    codes = [torch.softmax(rand(6, 5, seed=10 + s), dim=1) for s in range(2)]
    torch.testing.assert_close(swapped_prediction_loss(scores, codes, t), naive_swapped(scores, codes, t))
    # uniform predictions: the cross-entropy of any code is log K
    flat = [torch.zeros(6, 5, dtype=D64)] * crops
    torch.testing.assert_close(swapped_prediction_loss(flat, codes, t), torch.tensor(math.log(5), dtype=D64))
    # a crop is never scored against its own code: making crop 0's scores agree with code 0 changes nothing
    # when code 0 is the only code and there are other crops ... but changes the loss when another code uses it
    hot = torch.eye(5, dtype=D64)[torch.arange(6) % 5]
    own = swapped_prediction_loss([100 * hot] + scores[1:], [hot], t)
    assert torch.allclose(own, swapped_prediction_loss([scores[0]] + scores[1:], [hot], t))


# --- Deep InfoMax's JSD estimator ------------------------------------------------------------------


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


# --- CPC's InfoNCE -------------------------------------------------------------------------------


@pytest.mark.parametrize("m, d", [(3, 4), (8, 8), (10, 2)])
def test_cpc_info_nce_matches_naive(m, d):
    p, z = rand(m, d), rand(m, d, seed=1)
    naive = sum(-(p[i] @ z[i] - torch.logsumexp(torch.stack([p[i] @ z[j] for j in range(m)]), 0))
                for i in range(m)) / m
    torch.testing.assert_close(cpc_info_nce(p, z), naive)


@pytest.mark.parametrize("a", [0.5, 2.0])
def test_cpc_info_nce_closed_form(a):
    m = 6
    z = a * torch.eye(m, dtype=D64)  # the prediction equals its target; targets orthogonal
    torch.testing.assert_close(cpc_info_nce(z, z), torch.tensor(math.log(1 + (m - 1) * math.exp(-a * a)), dtype=D64))


# --- multi-crop views and the small ViT --------------------------------------------------------------


@pytest.mark.parametrize("size, channels, local, local_min", [(28, 1, 14, 0.25), (32, 3, 16, 0.05), (96, 3, 48, 0.05)])
def test_multicrop_recipe_two_global_then_local_crops(size, channels, local, local_min):
    recipes = method_recipes("multicrop", size, channels)
    assert len(recipes) == 2 + 6 and "multicrop" in RECIPES
    assert [(r.size, r.min_scale, r.max_scale) for r in recipes[:2]] == [(size, 0.4, 1.0)] * 2
    assert {(r.size, r.min_scale, r.max_scale) for r in recipes[2:]} == {(local, local_min, 0.4)}
    assert (recipes[0].blur_p, recipes[1].solarize_p) == ((1.0, 0.2) if size >= 64 else (0.0, 0.2))
    for r in recipes:  # the per-image path crops in the recipe's range
        assert tuple(r.per_image().transforms[0].scale) == (r.min_scale, r.max_scale)


def test_batched_crops_stay_within_the_local_range():
    local = method_recipes("multicrop", 32, 3)[2]
    aug = BatchAugment(local)
    box = aug.sample_params(4000, 32, 32, "cpu", torch.Generator().manual_seed(0))["box"].double()
    area = box[:, 2] * box[:, 3] / (32 * 32)
    assert area.max() <= 0.4 + 0.05 and area.min() >= 0.05 - 0.02  # rounding of the box to whole pixels
    assert area.mean() < 0.3  # the bound is used (the whole-image range would average ~0.52)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    assert aug(images).shape == (5, 3, 16, 16)
    with pytest.raises(ValueError, match="max_scale"):
        dataclasses.replace(local, max_scale=0.01)


def test_small_vit_features_tokens_and_other_sizes():
    net, d = build_backbone("vit_tiny", 1)
    assert d == 192 == net.local_dim
    x = torch.randn(3, 1, 28, 28)
    net.eval()
    assert net(x).shape == (3, 192) and net.local_features(x).shape == (3, 192, 7, 7)
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 192) and net.local_features(torch.randn(2, 1, 16, 16)).shape == (
        2, 192, 4, 4)
    assert net._positions(8, 8) is net.position  # the native grid: no interpolation
    y = x.clone()
    y[:, :, 24:, 24:] += 1.0  # the last patch only: attention carries it to the CLS token and every patch
    assert not torch.allclose(net(x), net(y)) and not torch.allclose(net.local_features(x)[..., 0, 0],
                                                                     net.local_features(y)[..., 0, 0])


def test_by_size_runs_each_size_once_and_keeps_the_order():
    calls = []

    def fn(x):
        calls.append(x.shape[0])
        return x.flatten(1).sum(dim=1, keepdim=True)

    views = [torch.full((2, 1, 4, 4), float(i)) for i in range(2)] + [torch.full((2, 1, 2, 2), float(i)) for i in
                                                                      range(2, 5)]
    out = by_size(fn, views)
    assert calls == [4, 6] and [float(o[0]) for o in out] == [0.0, 16.0, 8.0, 12.0, 16.0]


# --- DINO -------------------------------------------------------------------------------------------


def multicrop_batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 1, 12, 12, generator=g) for _ in range(2)] + [torch.randn(n, 1, 6, 6, generator=g)
                                                                          for _ in range(3)]


def small_dino(**kw):
    enc, d = tiny_encoder()
    o = dino.Options(out_dim=32, proj_hidden=16, bottleneck=8, **kw)
    return dino.DINO(enc, d, o)


def test_dino_loss_of_its_parts_center_update_and_no_teacher_gradient():
    model = small_dino(center_momentum=0.8)
    model.center.fill_(0.05)
    views = multicrop_batch()
    with torch.no_grad():
        student = [model.head(model.encoder(torch.cat(views[:2])))[i * 8:(i + 1) * 8] for i in range(2)]
        student += list(model.head(model.encoder(torch.cat(views[2:]))).chunk(3))
        teacher = list(model.teacher_head(model.teacher_encoder(torch.cat(views[:2]))).chunk(2))
    loss, metrics = model(views)
    torch.testing.assert_close(loss, dino_loss(student, teacher, torch.full((1, 32), 0.05), 0.1, 0.04))
    torch.testing.assert_close(model.center, 0.8 * 0.05 + 0.2 * torch.cat(teacher).mean(dim=0, keepdim=True))
    loss.backward()
    assert all(p.grad is None for p in [*model.teacher_encoder.parameters(), *model.teacher_head.parameters()])
    assert metrics["teacher_temperature"] == 0.04


def test_dino_schedules_freeze_warmup_and_teacher_momentum():
    model = small_dino(freeze_last_layer=0.1, teacher_warmup=0.5, warmup_teacher_temperature=0.02,
                       teacher_temperature=0.06, ema=0.9)
    views = multicrop_batch()
    model(views)[0].backward()
    assert model.head.last.grad is not None and model.head.last.grad.abs().max() == 0  # frozen at the start
    assert model.head.mlp[0].weight.grad.abs().max() > 0
    assert model.teacher_temperature() == pytest.approx(0.02)
    before = copy.deepcopy(model.teacher_encoder)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.update_target(0.25)
    m = cosine_ema(0.9, 0.25)
    assert float(model.momentum) == pytest.approx(m) and model.teacher_temperature() == pytest.approx(0.04)
    for p_t, p_b, p_s in zip(model.teacher_encoder.parameters(), before.parameters(), model.encoder.parameters()):
        torch.testing.assert_close(p_t, m * p_b + (1 - m) * p_s)
    model.zero_grad()
    model(views)[0].backward()
    assert model.head.last.grad.abs().max() > 0  # unfrozen after 10% of training
    model.update_target(0.9)
    assert model.teacher_temperature() == pytest.approx(0.06)
    # the last layer's rows have norm 1 (norm_last_layer): scaling v changes nothing
    x = torch.randn(4, 16)
    out = model.head(x)
    with torch.no_grad():
        model.head.last.mul_(3.0)
    torch.testing.assert_close(model.head(x), out)


# --- SwAV -------------------------------------------------------------------------------------------


def small_swav(**kw):
    enc, d = tiny_encoder()
    o = dict(proj_dim=8, proj_hidden=16, prototypes=6, freeze_prototypes=0, queue_length=0) | kw
    return swav.SwAV(enc, d, swav.finish(swav.Options(**o), local_batch=8))


def test_swav_loss_of_its_parts_and_normalised_prototypes():
    model = small_swav()
    with torch.no_grad():
        model.prototypes.weight.mul_(5.0)
    views = multicrop_batch()
    loss, _ = model(views)
    w = model.prototypes.weight
    torch.testing.assert_close(w.norm(dim=1), torch.ones(6))  # re-normalised before the step
    with torch.no_grad():
        z = [F.normalize(t, dim=1) for t in model.projector(model.encoder(torch.cat(views[:2]))).chunk(2)]
        z += [F.normalize(t, dim=1) for t in model.projector(model.encoder(torch.cat(views[2:]))).chunk(3)]
        scores = [zi @ w.T for zi in z]
    codes = [sinkhorn_knopp(s, 0.05, 3) for s in scores[:2]]
    torch.testing.assert_close(loss, swapped_prediction_loss(scores, codes, 0.1))
    loss.backward()
    assert w.grad.abs().max() > 0


def test_swav_frozen_prototypes_and_the_queue():
    model = small_swav(freeze_prototypes=2, queue_length=16, queue_start=0.5)
    assert model.options.local_queue == 16 and model.queue.shape == (2, 16, 8)
    assert swav.finish(swav.Options(queue_length=3840), world_size=2, local_batch=256).local_queue == 1792  # 3584 / 2
    views = multicrop_batch()
    model(views)[0].backward()
    assert model.prototypes.weight.grad.abs().max() == 0  # frozen for the first 2 steps
    model.update_target(0.1)
    model.update_target(0.5)  # step 2, half-way: the queue starts
    model.zero_grad()
    loss_first, metrics = model(views)
    loss_first.backward()
    assert model.prototypes.weight.grad.abs().max() > 0 and metrics["queue"] == 8
    assert "queue" not in model.state_dict()  # not saved: a resumed run refills it
    model(multicrop_batch(seed=1))  # fills it
    assert int(model.queued) == 16
    with torch.no_grad():
        z1 = F.normalize(model.projector(model.encoder(torch.cat(views[:2]))), dim=1)[:8]
        queue = model.queue[0].clone()
        scores = z1 @ model.prototypes.weight.T
        with_queue = sinkhorn_knopp(torch.cat([queue @ model.prototypes.weight.T, scores]))[-8:]
        torch.testing.assert_close(model.codes(0, scores, z1), with_queue)
        assert not torch.allclose(with_queue, sinkhorn_knopp(scores))  # the queue changes the codes
        torch.testing.assert_close(model.queue[0, :8], z1)  # newest rows first


# --- Deep InfoMax and CPC ---------------------------------------------------------------------------


class TokenEncoder(nn.Module):
    """A stand-in for a sequence encoder: embeddings, a causal convolution, local_features (N, D, L)."""

    def __init__(self, vocab=11, dim=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.conv = nn.Conv1d(dim, dim, 2)
        self.local_dim = self.out_dim = dim

    def local_features(self, tokens):
        x = self.embed(tokens).transpose(1, 2)  # (N, D, L)
        return torch.relu(self.conv(F.pad(x, (1, 0))))  # position t sees tokens t - 1 and t

    def forward(self, tokens):
        return self.local_features(tokens).mean(dim=2)


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
    from contrastive.image.augment import RECIPES
    from contrastive.methods import view_recipe

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
    assert resolve_options("infomax", {"stabilise": True, "estimator": "nce"})["stabilise"] is True
    one_view = infomax.build(infomax.Options(embed_dim=8, embed_hidden=8, estimator="nce"), enc, d)
    one_view.load_state_dict(model.state_dict())
    with torch.no_grad():  # off: a second view (the code modality always makes two) is not read
        torch.testing.assert_close(one_view([x1, x2])[0], local_global_nce_loss(l1, g1))
    # the option picks the views the data modality makes: one as published, two for AMDIM
    assert view_recipe("infomax", {**SMALL["infomax"], "cross_view": False}) == "one_view"
    two = view_recipe("infomax", {**SMALL["infomax"], "cross_view": True})
    assert two != "one_view" and len(RECIPES[two](16, 1)) == 2
    assert view_recipe("simclr", {}) == METHODS["simclr"].VIEWS


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
                                 method_options={**SMALL["infomax"], "cross_view": cross_view},
                                 knn=KnnConfig(k=10, every=0))
            pretrain(cfg, data=make_splits(), log=lambda *_: None)
    finally:
        infomax.DeepInfoMax.forward = original
    assert seen == [1, 1, 2, 2]  # two steps of 32 items per run


def test_cpc_context_is_causal_and_the_loss_is_the_mean_infonce_over_offsets():
    enc, d = tiny_encoder()
    model = cpc.build(cpc.Options(steps=2, context_hidden=8, context_layers=2), enc, d)
    model.eval()
    z = torch.randn(3, d, 5, 4)
    c = model.context(z)
    z2 = z.clone()
    z2[:, :, 3:] += 1.0  # change rows 3 and 4
    c2 = model.context(z2)
    torch.testing.assert_close(c2[:, :, :3], c[:, :, :3])  # rows 0..2 do not see rows below
    assert not torch.allclose(c2[:, :, 3], c[:, :, 3])

    x = torch.randn(4, 1, 16, 16)  # a 4 x 4 map
    with torch.no_grad():
        z = enc.local_features(x)
        c = model.context(z)
        losses = []
        for k in (1, 2):
            p = model.predict[k - 1](c[:, :, :-k]).permute(0, 2, 3, 1).reshape(-1, d)
            t = z[:, :, k:].permute(0, 2, 3, 1).reshape(-1, d)
            losses.append(cpc_info_nce(p, t))
        torch.testing.assert_close(model([x])[0], sum(losses) / 2)


def test_cpc_on_token_sequences():
    model = cpc.build(cpc.Options(steps=3, context_hidden=8, context_layers=2, max_pairs=10), TokenEncoder(), 8)
    tokens = torch.randint(0, 11, (5, 12))
    assert model.latents(tokens).shape == (5, 8, 12, 1)  # a sequence is a grid of one column
    loss, _ = model([tokens])
    loss.backward()
    assert torch.isfinite(loss) and model.encoder.embed.weight.grad.abs().max() > 0
    assert all(w.weight.grad.abs().max() > 0 for w in model.predict)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(30):  # a sequence whose next tokens follow from the current one is learned
        tokens = (torch.randint(0, 11, (16, 1)) + torch.arange(12)) % 11
        loss, _ = model([tokens])
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.5


# --- two gloo processes against one ------------------------------------------------------------------

N_GLOBAL = 8  # 4 per rank


def _views() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randn(N_GLOBAL, 16, generator=g, dtype=D64) for _ in range(4)]


def _bn_free(name: str) -> nn.Module:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(16, 16), nn.ReLU())
    if name == "dino":
        model = dino.DINO(encoder, 16, dino.Options(out_dim=12, proj_hidden=16, bottleneck=8, freeze_last_layer=0))
    else:
        model = swav.SwAV(encoder, 16, swav.Options(proj_dim=8, proj_hidden=16, prototypes=5, freeze_prototypes=0,
                                                    queue_length=0))
        model.projector = mlp(16, 16, 8, 2, batch_norm=False)
    return model.double()


def _job_center_and_sinkhorn():
    out = {}
    for name in ("dino", "swav"):
        model = _bn_free(name)
        ddp = dist.data_parallel(model, torch.device("cpu"))
        loss, _ = ddp([v[dist.shard(N_GLOBAL)] for v in _views()])
        loss.backward()
        out[name] = {"loss": loss.detach(), "grads": {k: p.grad.clone() for k, p in model.named_parameters()
                                                      if p.grad is not None}}
        if name == "dino":
            out["center"] = model.center.clone()
    scores = _views()[0][:, :6]
    out["codes"] = sinkhorn_knopp(scores[dist.shard(N_GLOBAL)], 0.05, 3, total=dist.all_reduce_sum)
    out["local_codes"] = sinkhorn_knopp(scores[dist.shard(N_GLOBAL)], 0.05, 3)
    return out


def test_center_and_sinkhorn_across_two_processes_equal_one_process(tmp_path):
    results = run_two_ranks(_job_center_and_sinkhorn, tmp_path)
    codes = sinkhorn_knopp(_views()[0][:, :6], 0.05, 3)
    for r, part in zip(results, (slice(0, 4), slice(4, 8))):
        torch.testing.assert_close(r["codes"], codes[part], rtol=1e-9, atol=1e-12)
        assert not torch.allclose(r["local_codes"], codes[part])  # the all-reduce matters
    for name in ("dino", "swav"):
        model = _bn_free(name)
        loss, _ = model(_views())
        loss.backward()
        # per-image losses: the mean of the ranks' losses is the global one, and DDP averages the gradients
        torch.testing.assert_close(sum(r[name]["loss"] for r in results) / WORLD, loss.detach())
        for key, p in model.named_parameters():
            if p.grad is not None:
                for r in results:
                    torch.testing.assert_close(r[name]["grads"][key], p.grad, rtol=1e-8, atol=1e-10, msg=key)
        assert any(p.grad.abs().max() > 1e-4 for p in model.parameters() if p.grad is not None)
        if name == "dino":
            for r in results:
                torch.testing.assert_close(r["center"], model.center, rtol=1e-9, atol=1e-12)
            assert model.center.abs().max() > 0


# --- registry, training loop, checkpoint ---------------------------------------------------------------

SMALL = {
    "dino": {"out_dim": 64, "proj_hidden": 32, "bottleneck": 16},
    "swav": {"prototypes": 10, "proj_hidden": 32, "proj_dim": 16, "queue_length": 32, "queue_start": 0.0},
    "infomax": {"embed_dim": 16, "embed_hidden": 16},
    "cpc": {"context_hidden": 16, "context_layers": 1},
}


@pytest.mark.parametrize("name", NEW)
def test_registered_with_sourced_defaults(name):
    from contrastive.config import PretrainConfig

    module = METHODS[name]
    cfg = PretrainConfig(method=name).resolve(make_splits())
    assert cfg.lr == module.BASE_LR["sgd"] and set(module.BASE_LR) == {"sgd", "lars", "adamw"}
    assert set(module.SHAPE) <= set(cfg.method_options) and module.VIEWS in RECIPES
    assert all(f.metadata["help"] for f in dataclasses.fields(module.Options))
    if hasattr(module, "distributed_note"):
        assert isinstance(module.distributed_note(cfg.method_options), str)


@pytest.mark.parametrize("name", NEW)
def test_pretrain_one_epoch_and_the_checkpoint_encoder_loads(tmp_path, name):
    from contrastive.config import KnnConfig, PretrainConfig
    from contrastive.evaluate.pretrained import load_pretrained
    from contrastive.train import pretrain

    cfg = PretrainConfig(method=name, backbone="small_cnn", epochs=1, batch_size=16, lr=0.01, out=str(tmp_path / "run"),
                         method_options=dict(SMALL[name]), data_options={"views": "paper"},
                         knn=KnnConfig(k=10, every=0))
    result = pretrain(cfg, data=make_splits(), log=lambda *_: None)
    assert result.steps == 64 // 16
    pre = load_pretrained(result.run_dir / "checkpoint-epoch0001.pt")
    for key, value in result.model.encoder.state_dict().items():
        assert torch.equal(pre.encoder.state_dict()[key], value), key
    if name == "swav":
        assert int(result.model.queued) == 32  # filled during the epoch


@pytest.mark.parametrize("augment, local_crops", [("batch", None), ("per-image", None), ("batch", 2)])
def test_multicrop_views_reach_the_method_in_both_augmentation_paths(tmp_path, augment, local_crops):
    from contrastive.config import KnnConfig, PretrainConfig
    from contrastive.train import pretrain

    seen = []
    original = dino.DINO.forward

    def spy(self, views):
        seen.append([tuple(v.shape[-2:]) for v in views])
        return original(self, views)

    dino.DINO.forward = spy
    try:
        cfg = PretrainConfig(method="dino", backbone="small_cnn", epochs=1, batch_size=32, lr=0.01,
                             out=str(tmp_path / "run"), method_options=dict(SMALL["dino"]),
                             data_options={"views": "paper", "augment": augment, "local_crops": local_crops},
                             knn=KnnConfig(k=10, every=0))
        result = pretrain(cfg, data=make_splits(), log=lambda *_: None)
    finally:
        dino.DINO.forward = original
    local = 6 if local_crops is None else local_crops  # 2 global + 6 local crops by default
    assert seen and all(shapes == [(16, 16)] * 2 + [(8, 8)] * local for shapes in seen)
    assert result.config.data_options["local_crops"] == local  # the resolved count is saved with the run


def test_local_crops_default_by_view_style_and_must_not_be_negative():
    from contrastive.errors import ContrastiveError
    from contrastive.image import IMAGE

    digits = make_splits()  # one channel, 16 px: handwriting views by default
    assert IMAGE.resolve({}, digits)["local_crops"] == 0
    assert IMAGE.resolve({"views": "paper"}, digits)["local_crops"] == 6
    assert IMAGE.resolve({}, make_splits(channels=3))["local_crops"] == 6  # colour images: the paper's views
    assert IMAGE.resolve({"local_crops": 3}, digits)["local_crops"] == 3  # a given count wins
    with pytest.raises(ContrastiveError, match="--local-crops must be 0 or more"):
        IMAGE.resolve({"local_crops": -1}, digits)


def test_cpc_windows_are_encoded_alone_in_grid_order():
    enc, d = tiny_encoder()
    enc.eval()
    model = cpc.build(cpc.Options(steps=2, context_hidden=8, context_layers=1, patch=4), enc, d)
    x = torch.randn(2, 1, 12, 12)
    z = model.latents(x)
    assert z.shape == (2, d, 5, 5)  # windows of 4 at stride 2 over 12
    torch.testing.assert_close(z[1, :, 3, 2], enc(x[1:2, :, 6:10, 4:8])[0])  # row 3, column 2: its own window
    y = x.clone()
    y[:, :, 8:] += 1.0  # the bottom rows only: the windows above them do not change
    torch.testing.assert_close(model.latents(y)[:, :, :3], z[:, :, :3])
    loss, _ = model([x])
    loss.backward()
    assert enc.features[0].weight.grad.abs().max() > 0


def test_cpc_jittered_windows_are_shifted_crops_of_the_edge_padded_image():
    x = torch.randn(3, 2, 12, 12)
    plain, rows, cols = cpc.cut_windows(x, 4)
    assert (rows, cols) == (5, 5)
    torch.testing.assert_close(plain[1 * 25 + 3 * 5 + 2], x[1, :, 6:10, 4:8])  # item 1, row 3, column 2
    tiles, rows_t, cols_t = cpc.cut_windows(x, 4, stride=4)  # windows that share no pixels
    assert (rows_t, cols_t) == (3, 3)
    torch.testing.assert_close(tiles[2 * 9 + 1 * 3 + 2], x[2, :, 4:8, 8:12])
    j = 2
    torch.manual_seed(0)
    moved, rows_j, cols_j = cpc.cut_windows(x, 4, jitter=j)
    assert moved.shape == plain.shape and (rows_j, cols_j) == (rows, cols)  # the grid is unchanged
    padded = F.pad(x, (j,) * 4, mode="replicate")
    offsets = []
    for m in range(len(moved)):
        i, r, c = m // 25, (m % 25) // 5, m % 5
        found = [(dy, dx) for dy in range(-j, j + 1) for dx in range(-j, j + 1)
                 if torch.equal(moved[m], padded[i, :, 2 * r + j + dy:2 * r + j + dy + 4, 2 * c + j + dx:2 * c + j + dx + 4])]
        assert found, f"window {m} is not a shifted crop"
        offsets.append(found[0])
    assert len(set(offsets)) > 10  # each window draws its own offset


def test_cpc_jitter_only_while_training():
    enc, d = tiny_encoder()
    model = cpc.build(cpc.Options(steps=2, context_hidden=8, context_layers=1, patch=4, jitter=2), enc, d)
    x = torch.randn(2, 1, 12, 12)
    model.eval()
    torch.testing.assert_close(model.latents(x), cpc.build(cpc.Options(patch=4), enc, d).eval().latents(x))
    model.train()
    assert not torch.allclose(model.latents(x), model.latents(x))  # fresh offsets each call


def test_cpc_directions_turn_the_grid_and_give_each_direction_its_predictors():
    enc, d = tiny_encoder()
    one = cpc.build(cpc.Options(steps=2, context_hidden=8, context_layers=1), enc, d)
    four = cpc.build(cpc.Options(steps=2, context_hidden=8, context_layers=1, directions=4), enc, d)
    assert len(one.predict) == 2 and len(four.predict) == 8
    assert set(one.state_dict()) <= set(four.state_dict())  # a one-direction checkpoint keeps its names
    four.eval()
    x = torch.randn(4, 1, 16, 16)  # a 4 x 4 map
    with torch.no_grad():
        z = enc.local_features(x)
        losses = []
        for direction, turns in enumerate((0, 1, 2, 3)):
            zr = torch.rot90(z, turns, dims=(2, 3))
            c = four.context(zr)
            for k in (1, 2):
                p = four.predict[direction * 2 + k - 1](c[:, :, :-k]).permute(0, 2, 3, 1).reshape(-1, d)
                t = zr[:, :, k:].permute(0, 2, 3, 1).reshape(-1, d)
                losses.append(cpc_info_nce(p, t))
        torch.testing.assert_close(four([x])[0], sum(losses) / 8)
        # bottom-up reads row 3 to predict row 2: the top-down half alone is not the same loss
        assert not torch.allclose(four([x])[0], sum(losses[:2]) / 2)
    seq = cpc.build(cpc.Options(steps=2, context_hidden=8, context_layers=1, directions=2), TokenEncoder(), 8)
    loss, _ = seq([torch.randint(0, 11, (4, 9))])
    assert torch.isfinite(loss)
    seq4 = cpc.build(cpc.Options(steps=2, context_hidden=8, context_layers=1, directions=4), TokenEncoder(), 8)
    with pytest.raises(ValueError, match="a sequence takes --directions 1 or 2"):
        seq4([torch.randint(0, 11, (4, 9))])


def test_layer_norm_small_cnn_keeps_each_item_independent_of_its_batch():
    from contrastive.image.backbones import small_cnn

    torch.manual_seed(0)
    x = torch.randn(6, 1, 28, 28)
    ln, d = build_backbone("small_cnn_grid_ln", 1)
    bn, _ = build_backbone("small_cnn_grid", 1)
    assert d == 4 * 32 * 4 and not any(isinstance(m, nn.BatchNorm2d) for m in ln.modules())
    ln.train(), bn.train()
    torch.testing.assert_close(ln(x)[:2], ln(x[:2]))  # training mode: no batch statistics
    assert not torch.allclose(bn(x)[:2], bn(x[:2]))  # batch norm's features depend on the rest of the batch
    with pytest.raises(ValueError, match="norm must be one of batch, layer"):
        small_cnn(1, norm="instance")


def test_cpc_cross_view_predicts_the_second_views_rows_from_the_first_views_context():
    from contrastive.methods import view_recipe

    enc, d = tiny_encoder()
    model = cpc.build(cpc.Options(steps=2, context_hidden=8, context_layers=1, cross_view=True), enc, d)
    model.eval()
    x1, x2 = torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)  # 4 x 4 maps
    with torch.no_grad():
        for w in model.predict:
            w.weight.mul_(30.0)  # scores far from zero: each InfoNCE away from its log M at initialisation
        z1, z2 = enc.local_features(x1), enc.local_features(x2)
        losses = []
        for context, target in ((z1, z2), (z2, z1)):  # both ways
            c = model.context(context)
            for k in (1, 2):
                p = model.predict[k - 1](c[:, :, :-k]).permute(0, 2, 3, 1).reshape(-1, d)
                t = target[:, :, k:].permute(0, 2, 3, 1).reshape(-1, d)
                losses.append(cpc_info_nce(p, t))
        torch.testing.assert_close(model([x1, x2])[0], sum(losses) / 4)
        one_view = cpc.build(cpc.Options(steps=2, context_hidden=8, context_layers=1), enc, d)
        one_view.load_state_dict(model.state_dict())
        assert not torch.allclose(one_view.eval()([x1, x2])[0], sum(losses) / 4)  # off: view 2 is not read
    with pytest.raises(ValueError, match="two views"):
        model([x1])
    assert view_recipe("cpc", {"cross_view": False}) == "one_view"
    assert len(RECIPES[view_recipe("cpc", {"cross_view": True})](16, 1)) == 2
