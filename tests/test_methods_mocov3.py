"""MoCo v3 (contrastive/methods/mocov3.py): the loss, the pairing of views and the key encoder."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from contrastive.methods.mocov3 import contrastive_loss
from contrastive.momentum import cosine_ema
from helpers import fixed_views, small_method, two_batches


def naive_ctr(q, keys, offset, t):
    q, keys = F.normalize(q, dim=1), F.normalize(keys, dim=1)
    terms = [-(q[i] @ keys[offset + i] / t - torch.logsumexp(q[i] @ keys.T / t, 0)) for i in range(len(q))]
    return torch.stack(terms).mean() * 2 * t


@pytest.mark.parametrize("t", [0.2, 1.0])
def test_mocov3_loss_closed_form_for_orthonormal_identical_views_and_naive_reference(t):
    n = 4
    keys = torch.eye(2 * n, 16, dtype=torch.float64)  # 2n orthonormal keys: as if from 2 ranks of n
    # queries equal to their keys: the positive logit is 1/T, every other one 0
    for offset in (0, n):
        loss = contrastive_loss(keys[offset:offset + n], keys, offset, t)
        torch.testing.assert_close(loss, torch.tensor(2 * t * math.log(1 + (2 * n - 1) * math.exp(-1 / t)),
                                                      dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(5, 8, generator=g, dtype=torch.float64), torch.randn(10, 8, generator=g, dtype=torch.float64)
    torch.testing.assert_close(contrastive_loss(q, k, 5, t), naive_ctr(q, k, 5, t))


def test_mocov3_pairs_each_query_with_the_other_views_keys():
    model = small_method("mocov3")
    x1, x2 = two_batches()
    with torch.no_grad():
        q1, q2 = model.query(x1), model.query(x2)
        k1, k2 = model.key(x1), model.key(x2)
    loss, metrics = model([x1, x2])
    torch.testing.assert_close(loss, naive_ctr(q1, k2, 0, 0.5) + naive_ctr(q2, k1, 0, 0.5))
    assert (loss.detach() - (naive_ctr(q1, k1, 0, 0.5) + naive_ctr(q2, k2, 0, 0.5))).abs() > 1e-3
    assert metrics == {"momentum": pytest.approx(0.9)}
    assert model.predictor[-1][-1].affine is False and len(model.projector) == 3


def test_mocov3_key_encoder_gets_no_gradient_and_follows_the_cosine_momentum():
    model = small_method("mocov3")
    target = ("key_encoder", "key_projector")
    views = fixed_views()
    loss, _ = model(views)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for t in target for p in getattr(model, t).parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.predictor.parameters())
    trainable = copy.deepcopy(model)  # frozen or not, the keys are outside the loss's graph
    key_params = [p.requires_grad_(True) for t in target for p in getattr(trainable, t).parameters()]
    assert all(g is None for g in torch.autograd.grad(trainable(views)[0], key_params, allow_unused=True))
    # the momentum network is the encoder and the projector, no predictor
    n_key = sum(p.numel() for t in target for p in getattr(model, t).parameters())
    assert n_key == sum(p.numel() for p in [*model.encoder.parameters(), *model.projector.parameters()])

    before = {t: copy.deepcopy(getattr(model, t)) for t in target}
    torch.optim.SGD(model.parameters(), lr=0.1).step()  # moves the online network only
    model.update_target(0.3)
    m = cosine_ema(0.9, 0.3)
    assert 0.9 < m < 1 and float(model.momentum) == pytest.approx(m)
    for t in target:
        online = getattr(model, t.replace("key_", ""))
        for p_t, p_before, p_online in zip(getattr(model, t).parameters(), before[t].parameters(),
                                          online.parameters()):
            torch.testing.assert_close(p_t, m * p_before + (1 - m) * p_online)
        assert any(not torch.equal(a, b) for a, b in zip(before[t].parameters(), online.parameters()))
    model.update_target(1.0)
    assert float(model.momentum) == 1.0
