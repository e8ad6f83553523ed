"""Split batch norm (contrastive/norm.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from contrastive.image.backbones import small_cnn
from contrastive.norm import SplitBatchNorm2d, convert_split_bn


def _trained_bn(momentum=0.1) -> nn.BatchNorm2d:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3, momentum=momentum)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return bn


@pytest.mark.parametrize("momentum", [0.1, None])
def test_split_bn_trains_as_plain_bn_on_each_group(momentum):
    bn = _trained_bn(momentum)
    split = convert_split_bn(copy.deepcopy(bn), 4)
    assert isinstance(split, SplitBatchNorm2d) and split.splits == 4
    x = (torch.randn(12, 3, 5, 5) * 3 + 1).requires_grad_(True)
    out = split(x)
    out.backward(torch.arange(out.numel(), dtype=out.dtype).view_as(out).sin())
    groups = [copy.deepcopy(bn) for _ in range(4)]
    xs = [x.detach()[3 * g:3 * g + 3].clone().requires_grad_(True) for g in range(4)]
    ref = torch.cat([b(xg) for b, xg in zip(groups, xs)])
    ref.backward(torch.arange(ref.numel(), dtype=ref.dtype).view_as(ref).sin())
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(x.grad, torch.cat([xg.grad for xg in xs]))
    torch.testing.assert_close(split.weight.grad, sum(b.weight.grad for b in groups))
    torch.testing.assert_close(split.running_mean, torch.stack([b.running_mean for b in groups]).mean(0))
    torch.testing.assert_close(split.running_var, torch.stack([b.running_var for b in groups]).mean(0))
    assert int(split.num_batches_tracked) == 1
    # and it differs from one BN over the whole batch
    assert not torch.allclose(out, copy.deepcopy(bn)(x.detach()), atol=1e-3)


def test_split_bn_evaluates_as_plain_bn_and_rejects_uneven_batches():
    bn = _trained_bn()
    split = convert_split_bn(copy.deepcopy(bn), 4)
    x = torch.randn(6, 3, 4, 4)
    torch.testing.assert_close(split.eval()(x), bn.eval()(x))  # 6 is no multiple of 4: fine in eval
    with pytest.raises(ValueError, match="split"):
        split.train()(x)


def test_split_bn_state_dict_loads_into_a_plain_backbone():
    torch.manual_seed(0)
    encoder, _ = small_cnn(1, width=4)
    encoder(torch.randn(8, 1, 12, 12))  # move the running statistics off their defaults
    converted = convert_split_bn(copy.deepcopy(encoder), 2)
    assert sum(isinstance(m, SplitBatchNorm2d) for m in converted.modules()) == 4
    assert not any(type(m) is nn.BatchNorm2d for m in converted.modules())
    converted(torch.randn(8, 1, 12, 12))  # a split training step changes the statistics
    plain, _ = small_cnn(1, width=4)
    assert plain.state_dict().keys() == converted.state_dict().keys()
    plain.load_state_dict(converted.state_dict())  # strict
    x = torch.randn(5, 1, 12, 12)
    torch.testing.assert_close(plain.eval()(x), converted.eval()(x))
