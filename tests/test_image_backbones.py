"""The backbones (contrastive/image/backbones.py): output widths, the CIFAR stem, the small ViT,
layer norm, and a clear error for an unknown name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contrastive.errors import ContrastiveError
from contrastive.image.backbones import build_backbone


@pytest.mark.parametrize("name,dim", [("small_cnn", 128), ("resnet18", 512)])
def test_backbones_output_features(name, dim):
    net, d = build_backbone(name, in_channels=1, cifar_stem=True)
    assert d == dim
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, dim)


def test_cifar_stem_keeps_resolution():
    net, _ = build_backbone("resnet18", 3, cifar_stem=True)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, nn.Identity)
    plain, _ = build_backbone("resnet18", 3, cifar_stem=False)
    assert plain.conv1.stride == (2, 2)


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ContrastiveError, match="unknown backbone 'resnet9'.*small_cnn"):
        build_backbone("resnet9")


def test_small_vit_features_tokens_and_other_sizes():
    net, d = build_backbone("vit_tiny", 1)
    assert d == 192 == net.local_dim
    x = torch.randn(3, 1, 28, 28)
    net.eval()
    assert net(x).shape == (3, 192) and net.local_features(x).shape == (3, 192, 7, 7)
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 192) and net.local_features(torch.randn(2, 1, 16, 16)).shape == (
        2, 192, 4, 4)
    assert net._positions(8, 8) is net.position  # the native grid: no interpolation
    y = x.clone()
    y[:, :, 24:, 24:] += 1.0  # the last patch only: attention carries it to the CLS token and every patch
    assert not torch.allclose(net(x), net(y)) and not torch.allclose(net.local_features(x)[..., 0, 0],
                                                                     net.local_features(y)[..., 0, 0])


def test_layer_norm_small_cnn_keeps_each_item_independent_of_its_batch():
    from contrastive.image.backbones import small_cnn

    torch.manual_seed(0)
    x = torch.randn(6, 1, 28, 28)
    ln, d = build_backbone("small_cnn_grid_ln", 1)
    bn, _ = build_backbone("small_cnn_grid", 1)
    assert d == 4 * 32 * 4 and not any(isinstance(m, nn.BatchNorm2d) for m in ln.modules())
    ln.train(), bn.train()
    torch.testing.assert_close(ln(x)[:2], ln(x[:2]))  # training mode: no batch statistics
    assert not torch.allclose(bn(x)[:2], bn(x[:2]))  # batch norm's features depend on the rest of the batch
    with pytest.raises(ValueError, match="norm must be one of batch, layer"):
        small_cnn(1, norm="instance")
