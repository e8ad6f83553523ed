"""Barlow Twins (contrastive/methods/barlow_twins.py): the loss is the paper's formula."""

from __future__ import annotations

import torch

from helpers import small_method, two_batches


def barlow_by_hand(z1, z2, lam):
    """Barlow Twins eq. 1-2: standardise each dimension over the batch, c = z1n^T z2n / N."""
    n = z1.shape[0]
    z1n = (z1 - z1.mean(0)) / torch.sqrt(z1.var(0, unbiased=False) + 1e-5)
    z2n = (z2 - z2.mean(0)) / torch.sqrt(z2.var(0, unbiased=False) + 1e-5)
    c = z1n.T @ z2n / n
    off = c - torch.diag(torch.diagonal(c))
    return ((1 - torch.diagonal(c)) ** 2).sum() + lam * (off ** 2).sum()


def test_barlow_twins_loss_is_the_papers_formula_of_its_projections():
    model = small_method("barlow_twins")
    x1, x2 = two_batches()
    with torch.no_grad():
        z1, z2 = model.project(x1), model.project(x2)
    loss, _ = model([x1, x2])
    torch.testing.assert_close(loss, barlow_by_hand(z1, z2, 0.01))
    assert model.projector[-1][0].bias is None and not any("2.0.bias" in k for k in model.state_dict())
