"""Barlow Twins (Zbontar et al. 2021, arXiv:2103.03230).

Two views through one encoder and projector; the loss drives the cross-correlation
matrix of the two views' projections, each dimension standardised over the batch,
towards the identity: sum_i (1 - c_ii)^2 + lambda * sum_{i != j} c_ij^2 (eq. 1-2).
No negatives, no predictor, no target network.

Projector (the paper's implementation details and the official code): Linear-BN-ReLU
twice, then a Linear without bias or BN; the loss's own standardisation (the official
code's affine-free BN) follows.

Under torchrun with `gather` on, c is over the global batch as in the official code
(SyncBN for the standardisation, all_reduce of c): every rank gathers z1 and z2 from all
ranks with gradients (`distributed.gather_with_grad`) and computes the same loss on the
global batch, so loss and gradients equal one process on the global batch. The
official all_reduce carries no gradient, so under DDP's average its gradient is 1/world
of that (facebookresearch/barlowtwins#8; lightly-ai/lightly#1977). The encoder's BN is
per process unless --sync-bn.

Not implemented: the official LARS recipe's separate learning rate for biases and BN
parameters (0.0048 against 0.2 for the weights); the optimizer belongs to the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from contrastive import distributed as dist
from contrastive.batches import ViewSpec
from contrastive.fields import opt
from contrastive.heads import mlp
from contrastive.losses import barlow_twins_loss
from contrastive.methods.base import MethodOptions


@dataclass(frozen=True)
class Options(MethodOptions):
    proj_dim: int = opt(2048, "projector output width: 2048 as in solo-learn's and lightly's CIFAR configs; the "
                              "paper's 8192 (its ablation finds accuracy still growing with the width) costs "
                              "16x the head compute on a CPU-sized run: pass 8192 to reproduce the paper")
    proj_hidden: int = opt(2048, "projector hidden width (paper: 8192; 2048 for the same reason as proj_dim)")
    head_layers: int = opt(3, "projector depth (Barlow Twins implementation details: 3 linear layers)")
    redundancy_weight: float = opt(5e-3, "lambda, the weight of the redundancy reduction (off-diagonal) term "
                                         "(Barlow Twins implementation details: 5e-3; the official code: 0.0051)")
    gather: bool = opt(True, "under torchrun: the cross-correlation over the global batch (official code), "
                             "exact gradients")

    VIEWS: ClassVar[ViewSpec] = ViewSpec("byol")  # Barlow Twins implementation details: BYOL's asymmetric pair

    def distributed_note(self) -> str:
        return ("Barlow Twins cross-correlation over the global batch" if self.gather
                else "Barlow Twins cross-correlation over each process's batch")


# Base lr per 256 images. LARS 0.2: Barlow Twins implementation details and the official
# --learning-rate-weights (weight decay 1.5e-6 there, 1e-6 in the code: the package's LARS default).
# SGD 3e-4: measured here, not from a paper or config: the loss sums over the D dimensions instead of
# averaging, so its gradients are about D times those of a mean loss. On the embedded digits (small_cnn,
# batch 256, 6 epochs, D = 2048) kNN top-1 went from 0.56 at random init to 0.74 at 1e-4 and 3e-4, 0.67
# at 1e-3, and fell to 0.49 at 3e-3 and 0.42 at 0.06, lightly's SGD value (its Imagenette benchmark,
# ResNet-18). AdamW 1e-3: a common small-batch choice, not from the paper.
BASE_LR = {"sgd": 3e-4, "lars": 0.2, "adamw": 1e-3}
SHAPE = ("proj_dim", "proj_hidden", "head_layers")  # options that shape the weights


class BarlowTwins(nn.Module):
    def __init__(self, encoder: nn.Module, feat_dim: int, options: Options = Options()):
        super().__init__()
        o = options
        self.options = o
        self.encoder = encoder
        self.projector = mlp(feat_dim, o.proj_hidden, o.proj_dim, o.head_layers, batch_norm=True)
        # The output layer has no bias (official code): the loss standardises each dimension, which cancels it.
        self.projector[-1][0].register_parameter("bias", None)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        x1, x2 = views
        # Each view is its own batch (BN statistics per view), as in the official code.
        z1, z2 = self.project(x1), self.project(x2)  # (n, proj_dim) each, this rank's batch
        if self.options.gather:  # c over every rank's batch (a no-op on one process)
            # (N, proj_dim) each, ranks in order, so row i of z1 and of z2 are still one image's views
            z1, z2 = dist.gather_with_grad(z1), dist.gather_with_grad(z2)
        return barlow_twins_loss(z1, z2, self.options.redundancy_weight), {}

    def classifier_neck(self) -> None:
        """Fine-tuning starts from the encoder alone (no head layer is kept)."""
        return None

    def update_target(self, progress: float) -> None:
        """Barlow Twins has no target network."""


def build(options: Options, encoder: nn.Module, feat_dim: int) -> BarlowTwins:
    return BarlowTwins(encoder, feat_dim, options)
