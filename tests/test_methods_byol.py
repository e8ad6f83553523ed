"""BYOL (contrastive/methods/byol.py): the target network and its momentum schedule."""

import pytest
import torch
import torch.nn.functional as F

from helpers import fixed_views, small_method


def test_byol_target_never_gets_gradient_through_loss():
    model = small_method("byol")
    loss, _ = model(fixed_views())
    loss.backward()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.predictor.parameters())


def test_byol_pairs_each_views_prediction_with_the_other_views_target():
    model = small_method("byol")
    x1, x2 = fixed_views(seed=1)[0], fixed_views(seed=2)[0]  # two distinct batches, so the pairing shows

    def by_hand(p, z):  # BYOL eq. 2: 2 - 2 cos(p, z), averaged over the batch
        return (2 - 2 * F.cosine_similarity(p, z, dim=1)).mean()

    with torch.no_grad():
        p1, p2 = model.online(x1), model.online(x2)
        z1, z2 = model.target(x1), model.target(x2)
    loss, _ = model([x1, x2])
    torch.testing.assert_close(loss, by_hand(p1, z2) + by_hand(p2, z1))
    # the same-view pairing, p1 with z1, gives a loss far outside assert_close's tolerance (~1e-5) of it
    assert (loss.detach() - (by_hand(p1, z1) + by_hand(p2, z2))).abs() > 1e-3


def test_byol_tau_follows_cosine_schedule():
    model = small_method("byol")
    model.update_target(0.0)
    assert float(model.tau) == pytest.approx(0.9)
    model.update_target(0.5)
    assert float(model.tau) == pytest.approx(1 - 0.1 * 0.5)
    model.update_target(1.0)
    assert float(model.tau) == pytest.approx(1.0)
