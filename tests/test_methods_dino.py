"""DINO (contrastive/methods/dino.py): the loss of its parts, the center and the schedules."""

from __future__ import annotations

import copy

import pytest
import torch

from contrastive.losses import dino_loss
from contrastive.methods import dino
from contrastive.momentum import cosine_ema
from helpers import multicrop_batch, tiny_encoder


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
