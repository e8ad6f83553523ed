"""SimCLR (Chen et al. 2020, arXiv:2002.05709; v2 head: arXiv:2006.10029).

Two views through one encoder and projection head; NT-Xent over the 2N projections.
"""

from __future__ import annotations

import torch
from torch import nn

from contrastive.heads import simclr_head
from contrastive.losses import nt_xent


class SimCLR(nn.Module):
    def __init__(self, encoder: nn.Module, feat_dim: int, proj_hidden: int, proj_dim: int = 128,
                 head_layers: int = 3, temperature: float = 0.5):
        super().__init__()
        self.encoder = encoder
        self.projector = simclr_head(feat_dim, proj_hidden, proj_dim, head_layers)
        self.temperature = temperature

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        x1, x2 = views
        # Both views in one batch, as the official implementation does: BN sees all 2N images.
        z = self.projector(self.encoder(torch.cat([x1, x2])))  # (2N, proj_dim)
        z1, z2 = z.chunk(2)  # (N, proj_dim) each
        return nt_xent(z1, z2, self.temperature), {}
