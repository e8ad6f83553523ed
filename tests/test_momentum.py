"""EMA updates, frozen copies and the momentum schedule (contrastive/momentum.py)."""

import pytest
import torch
from torch import nn

from contrastive.momentum import cosine_ema, ema_update, frozen_copy


def test_ema_update_formula_and_frozen_copy():
    online = nn.Linear(3, 2)
    target = frozen_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    with torch.no_grad():
        online.weight.add_(1.0)
    ema_update(target, online, 0.75)
    torch.testing.assert_close(target.weight, 0.75 * (online.weight - 1.0) + 0.25 * online.weight)


def test_cosine_ema_endpoints_and_monotone():
    assert cosine_ema(0.996, 0.0) == pytest.approx(0.996)
    assert cosine_ema(0.996, 1.0) == pytest.approx(1.0)
    vals = [cosine_ema(0.99, k / 10) for k in range(11)]
    assert all(a <= b for a, b in zip(vals, vals[1:]))
