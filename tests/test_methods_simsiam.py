"""SimSiam (contrastive/methods/simsiam.py): the pairing of views and the stop-gradient."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from helpers import grads, small_method, two_batches


def cos(p, z):
    return F.cosine_similarity(p, z, dim=1).mean()


def test_simsiam_pairs_each_prediction_with_the_other_views_projection():
    model = small_method("simsiam")
    x1, x2 = two_batches()
    with torch.no_grad():
        z1, z2 = model.project(x1), model.project(x2)
        p1, p2 = model.predictor(z1), model.predictor(z2)
    loss, _ = model([x1, x2])
    torch.testing.assert_close(loss, -cos(p1, z2) / 2 - cos(p2, z1) / 2)  # Algorithm 1
    assert (loss.detach() - (-cos(p1, z1) / 2 - cos(p2, z2) / 2)).abs() > 1e-3  # p1 with z1 is not it


def test_simsiam_stop_gradient_on_the_projection_side():
    model = small_method("simsiam")
    twin = copy.deepcopy(model)
    x1, x2 = two_batches()
    model([x1, x2])[0].backward()

    def by_hand(stop: bool):
        twin.zero_grad()
        z1, z2 = twin.project(x1), twin.project(x2)
        p1, p2 = twin.predictor(z1), twin.predictor(z2)
        t1, t2 = (z1.detach(), z2.detach()) if stop else (z1, z2)
        (-cos(p1, t2) / 2 - cos(p2, t1) / 2).backward()
        return grads(twin)

    with_stop, without = by_hand(True), by_hand(False)
    for name, g in grads(model).items():
        torch.testing.assert_close(g, with_stop[name], msg=name)
    # the stop-gradient changes the encoder's gradient (the check above is not vacuous)
    assert not torch.allclose(with_stop["encoder.features.0.weight"], without["encoder.features.0.weight"], atol=1e-6)
    assert model.projector[-1][-1].affine is False and len(model.predictor) == 2  # output BN w/o affine; 2 layers
