"""Projection and prediction heads: one parametric MLP.

Per-method shapes (the papers' choices):
- SimCLR v1 (arXiv:2002.05709 sec. 2.1): Linear -> ReLU -> Linear(128); the official code
  puts BN after each linear layer.
- SimCLRv2 (arXiv:2006.10029 sec. 2): three layers with BN, the hidden width equal to the
  encoder's output; fine-tuning starts from the first layer of this head.
- MoCo v2 (arXiv:2003.04297): Linear(2048) -> ReLU -> Linear(128), no BN.
- BYOL (arXiv:2006.07733 sec. 3.3): Linear(4096) -> BN -> ReLU -> Linear(256), for both
  the projector and the predictor.
"""

from __future__ import annotations

from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, batch_norm: bool = True,
        last_bn: bool = False) -> nn.Sequential:
    """`num_layers` linear layers; the hidden ones are followed by (BN) and ReLU.

    last_bn adds an affine-free BN after the output layer (SimCLR's official head does
    this). Layers are grouped so that `head[:k]` is the head cut after its k-th hidden
    layer, which is what SimCLRv2 fine-tuning takes.
    """
    if num_layers < 1:
        raise ValueError(f"an MLP head needs at least one layer, got {num_layers}")
    blocks: list[nn.Module] = []
    dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
    for i in range(num_layers):
        hidden = i < num_layers - 1
        layer: list[nn.Module] = [nn.Linear(dims[i], dims[i + 1], bias=not (batch_norm and (hidden or last_bn)))]
        if hidden:
            if batch_norm:
                layer.append(nn.BatchNorm1d(dims[i + 1]))
            layer.append(nn.ReLU(inplace=True))
        elif last_bn:
            layer.append(nn.BatchNorm1d(dims[i + 1], affine=False))
        blocks.append(nn.Sequential(*layer))
    return nn.Sequential(*blocks)


def simclr_head_shape(feat_dim: int, hidden_dim: int, out_dim: int = 128, num_layers: int = 3) -> dict:
    """The arguments of mlp() for SimCLR(v2)'s projection head: BN on every layer and an affine-free BN
    after the output, as in the official code (3 layers: SimCLRv2). Saved in checkpoints as the neck's shape."""
    return dict(in_dim=feat_dim, hidden_dim=hidden_dim, out_dim=out_dim, num_layers=num_layers, batch_norm=True,
                last_bn=True)


def simclr_head(feat_dim: int, hidden_dim: int, out_dim: int = 128, num_layers: int = 3) -> nn.Sequential:
    """SimCLR(v2) projection head (see simclr_head_shape)."""
    return mlp(**simclr_head_shape(feat_dim, hidden_dim, out_dim, num_layers))


def moco_head(feat_dim: int, hidden_dim: int, out_dim: int = 128, num_layers: int = 2) -> nn.Sequential:
    """MoCo v2 MLP head: no BN."""
    return mlp(feat_dim, hidden_dim, out_dim, num_layers, batch_norm=False)


def byol_mlp(in_dim: int, hidden_dim: int = 4096, out_dim: int = 256) -> nn.Sequential:
    """BYOL projector / predictor: Linear -> BN -> ReLU -> Linear."""
    return mlp(in_dim, hidden_dim, out_dim, 2, batch_norm=True)
