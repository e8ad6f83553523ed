"""VICReg (contrastive/methods/vicreg.py): the loss is the paper's formula."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from helpers import small_method, two_batches


def vicreg_by_hand(z1, z2, lam, mu, nu):
    """VICReg eq. 6 with the official code's variance (eps 1e-4) and covariance (/ d) terms."""
    n, d = z1.shape
    inv = ((z1 - z2) ** 2).mean()
    var = sum(F.relu(1 - torch.sqrt(z.var(0) + 1e-4)).mean() / 2 for z in (z1, z2))
    cov = 0.0
    for z in (z1, z2):
        c = (z - z.mean(0)).T @ (z - z.mean(0)) / (n - 1)
        cov = cov + ((c - torch.diag(torch.diagonal(c))) ** 2).sum() / d
    return lam * inv + mu * var + nu * cov


def test_vicreg_loss_is_the_papers_formula_of_its_embeddings():
    model = small_method("vicreg")
    x1, x2 = two_batches()
    with torch.no_grad():
        z1, z2 = model.expand(x1), model.expand(x2)
    loss, _ = model([x1, x2])
    torch.testing.assert_close(loss, vicreg_by_hand(z1, z2, 10.0, 20.0, 3.0))
    # the invariance term pairs row i of each view: shuffling one view's rows changes the loss
    assert (loss.detach() - vicreg_by_hand(z1, z2.flip(0), 10.0, 20.0, 3.0)).abs() > 1e-3
