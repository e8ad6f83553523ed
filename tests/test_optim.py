"""Optimizers, LARS, parameter groups and the warmup-cosine schedule (contrastive/optim.py)."""

import pytest
import torch
from torch import nn

from contrastive.optim import LARS, build_optimizer, param_groups, warmup_cosine


def test_no_weight_decay_on_bn_and_bias():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {p.ndim for p in decay["params"]} == {2, 4}
    assert len(no_decay["params"]) == 4  # BN weight, BN bias, conv bias, linear bias


def test_warmup_cosine_shape():
    total, warm = 100, 10
    assert warmup_cosine(0, total, warm) == pytest.approx(0.1)
    assert warmup_cosine(9, total, warm) == pytest.approx(1.0)
    assert warmup_cosine(10, total, warm) == pytest.approx(1.0)
    assert warmup_cosine(55, total, warm) == pytest.approx(0.5)
    assert warmup_cosine(100, total, warm) == pytest.approx(0.0, abs=1e-12)


def test_lars_trust_ratio_step():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))  # |w| = 5
    w.grad = torch.tensor([0.0, 2.0])  # |g| = 2, no weight decay
    opt = LARS([{"params": [w], "weight_decay": 0.0}], lr=1.0, momentum=0.0, eta=0.1)
    opt.step()
    # trust = 0.1 * 5 / 2 = 0.25 -> step = 0.25 * g
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 3.5]))
    b = nn.Parameter(torch.tensor([1.0]))
    b.grad = torch.tensor([2.0])
    opt = LARS([{"params": [b], "weight_decay": 0.0, "lars_exclude": True}], lr=0.5, momentum=0.0)
    opt.step()
    torch.testing.assert_close(b.detach(), torch.tensor([0.0]))  # plain SGD for excluded tensors


@pytest.mark.parametrize("name", ["sgd", "lars", "adamw"])
def test_each_optimizer_reduces_a_quadratic(name):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = build_optimizer(name, model, lr=0.05 if name != "lars" else 0.5, weight_decay=0.0)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    first = None
    for _ in range(50):
        loss = ((model(x) - y) ** 2).mean()
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_adamw_takes_the_same_steps_as_torchs_reference_update():
    """build_optimizer's AdamW (fused where the device has the kernel) against torch's plain single-tensor
    AdamW, with decay on matrices only: the same weights after a few steps of a small regression."""
    torch.manual_seed(0)
    # No BatchNorm here: the bias before one gets a gradient of rounding noise, which Adam blows up to full steps.
    a = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.ReLU(), nn.Linear(5, 1))
    b = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.ReLU(), nn.Linear(5, 1))
    b.load_state_dict(a.state_dict())
    ours = build_optimizer("adamw", a, 0.01, 0.1)
    groups = [{"params": [p for p in b.parameters() if p.ndim > 1], "weight_decay": 0.1},
              {"params": [p for p in b.parameters() if p.ndim <= 1], "weight_decay": 0.0}]
    reference = torch.optim.AdamW(groups, lr=0.01, foreach=False)
    x, y = torch.randn(16, 6), torch.randn(16, 1)
    for _ in range(5):
        for net, opt in ((a, ours), (b, reference)):
            loss = ((net(x) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6), (p, q)
    torch.manual_seed(0)
    start = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.ReLU(), nn.Linear(5, 1))
    assert not torch.allclose(a[0].weight, start[0].weight)  # it moved
