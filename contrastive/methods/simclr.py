"""SimCLR (Chen et al. 2020, arXiv:2002.05709; v2 head: arXiv:2006.10029).

Two views through one encoder and projection head; NT-Xent over the 2N projections.

Under torchrun with `gather` on, the negatives are the global batch: every rank gathers
the projections of all ranks (with gradients, `distributed.gather_with_grad`) and solves
the same global 2N x 2N problem, so loss and gradients equal one process on the global
batch. The cost is a (2N, 2N) similarity matrix on every rank instead of (2n, 2N); at
CIFAR batch sizes that is small. With `gather` off each rank contrasts its own batch.
"""

from __future__ import annotations

import torch
from torch import nn

from contrastive import distributed as dist
from contrastive.heads import simclr_head
from contrastive.losses import nt_xent


class SimCLR(nn.Module):
    def __init__(self, encoder: nn.Module, feat_dim: int, proj_hidden: int, proj_dim: int = 128,
                 head_layers: int = 3, temperature: float = 0.5, gather: bool = True):
        super().__init__()
        self.encoder = encoder
        self.projector = simclr_head(feat_dim, proj_hidden, proj_dim, head_layers)
        self.temperature = temperature
        self.gather = gather  # negatives from every rank (a no-op on one process)

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        x1, x2 = views
        # Both views in one batch, as the official implementation does: BN sees all 2n images
        # of this process (all 2N with --sync-bn). n: this process's batch, N: the global one.
        z = self.projector(self.encoder(torch.cat([x1, x2])))  # (2n, proj_dim)
        z1, z2 = z.chunk(2)  # (n, proj_dim) each, this rank's batch
        if self.gather:
            # (N, proj_dim) each, ranks in order, so row i of z1 and of z2 are still one image's views
            z1, z2 = dist.gather_with_grad(z1), dist.gather_with_grad(z2)
        return nt_xent(z1, z2, self.temperature), {}
