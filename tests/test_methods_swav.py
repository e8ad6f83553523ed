"""SwAV (contrastive/methods/swav.py): Sinkhorn-Knopp and the swapped prediction against naive loops
from the paper, the prototypes and the queue."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contrastive.losses import sinkhorn_knopp, swapped_prediction_loss
from contrastive.methods import swav
from helpers import D64, multicrop_batch, rand, tiny_encoder


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


def small_swav(**kw):
    enc, d = tiny_encoder()
    o = dict(proj_dim=8, proj_hidden=16, prototypes=6, freeze_prototypes=0, queue_length=0) | kw
    return swav.SwAV(enc, d, swav.Options(**o).finish(local_batch=8))


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
    assert swav.Options(queue_length=3840).finish(world_size=2, local_batch=256).local_queue == 1792  # 3584 / 2
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
