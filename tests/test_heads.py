"""The projection heads (contrastive/heads.py)."""

import torch
from torch import nn

from contrastive.heads import byol_mlp, moco_head, simclr_head


def test_simclr_v2_head_is_three_layers_with_bn_and_cuts_after_first():
    head = simclr_head(32, 32, 8, num_layers=3)
    assert len(head) == 3
    assert sum(isinstance(m, nn.BatchNorm1d) for m in head.modules()) == 3
    assert head[:1](torch.randn(4, 32)).shape == (4, 32)  # SimCLRv2 fine-tunes from here
    assert head(torch.randn(4, 32)).shape == (4, 8)


def test_moco_head_has_no_bn_and_byol_has_bn():
    assert not any(isinstance(m, nn.BatchNorm1d) for m in moco_head(16, 16).modules())
    byol = byol_mlp(16, 64, 8)
    assert [type(m) for m in byol[0]] == [nn.Linear, nn.BatchNorm1d, nn.ReLU]
    assert byol(torch.randn(4, 16)).shape == (4, 8)
