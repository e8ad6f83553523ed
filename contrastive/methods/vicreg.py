"""VICReg (Bardes, Ponce & LeCun 2022, arXiv:2105.04906).

Two views through one encoder and expander; the loss is a weighted sum of invariance
(mean squared error between the views), variance (a hinge keeping every dimension's
standard deviation over the batch at 1) and covariance (the off-diagonal covariances
squared) (eq. 6). No negatives, no predictor, no target network, no normalisation of z.

Expander (the paper's implementation details and the official code): Linear-BN-ReLU
twice, then a Linear without bias; every term of the loss is unchanged by a constant
shift of z, so a bias there would receive no gradient.

Under torchrun with `gather` on, the official code gathers both embeddings from every
process (its FullGatherLayer, whose backward sums over ranks like
`distributed.gather_with_grad`) before the variance and covariance terms; here the
invariance term is computed on the gathered batch too, which gives the same gradients
(a mean over equal shares) and the loss of the global batch on every rank. The encoder's
BN is per process unless --sync-bn (the official code converts to SyncBN).
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
from contrastive.losses import vicreg_loss
from contrastive.methods.base import MethodOptions


@dataclass(frozen=True)
class Options(MethodOptions):
    proj_dim: int = opt(2048, "expander output width: 2048 as in solo-learn's and lightly's CIFAR configs; the "
                              "paper's 8192 costs 16x the head compute on a CPU-sized run: pass 8192 to "
                              "reproduce the paper")
    proj_hidden: int = opt(2048, "expander hidden width (paper: 8192; 2048 for the same reason as proj_dim)")
    head_layers: int = opt(3, "expander depth (VICReg implementation details: 3 linear layers)")
    sim_weight: float = opt(25.0, "lambda, the weight of the invariance term (VICReg implementation details: 25)")
    var_weight: float = opt(25.0, "mu, the weight of the variance term (VICReg implementation details: 25)")
    cov_weight: float = opt(1.0, "nu, the weight of the covariance term (VICReg implementation details: 1)")
    gather: bool = opt(True, "under torchrun: variance and covariance over the global batch (official code), "
                             "exact gradients")

    VIEWS: ClassVar[ViewSpec] = ViewSpec("byol")  # VICReg follows BYOL's augmentations (its appendix)

    def distributed_note(self) -> str:
        return "VICReg loss over the global batch" if self.gather else "VICReg loss over each process's batch"


# Base lr per 256 images. LARS 0.2: VICReg implementation details and the official --base-lr (weight
# decay 1e-6, the package's LARS default). SGD 0.01: measured here, not from a paper or config: lightly
# trains VICReg with LARS only ("training diverges without LARS"), and its SGD value for other methods,
# 0.06, turned the loss to NaN in the first epoch on the embedded digits (small_cnn, batch 256); 0.003,
# 0.01 and 0.03 took kNN top-1 from 0.56 to 0.76, 0.78 and 0.75 in 6 epochs. AdamW 1e-3: a common
# small-batch choice, not from the paper.
BASE_LR = {"sgd": 0.01, "lars": 0.2, "adamw": 1e-3}
SHAPE = ("proj_dim", "proj_hidden", "head_layers")  # options that shape the weights


class VICReg(nn.Module):
    def __init__(self, encoder: nn.Module, feat_dim: int, options: Options = Options()):
        super().__init__()
        o = options
        self.options = o
        self.encoder = encoder
        self.expander = mlp(feat_dim, o.proj_hidden, o.proj_dim, o.head_layers, batch_norm=True)
        self.expander[-1][0].register_parameter("bias", None)  # no output bias (official code), see above

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        return self.expander(self.encoder(x))

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        x1, x2 = views
        # Each view is its own batch (BN statistics per view), as in the official code.
        z1, z2 = self.expand(x1), self.expand(x2)  # (n, proj_dim) each, this rank's batch
        if self.options.gather:  # statistics over every rank's batch (a no-op on one process)
            # (N, proj_dim) each, ranks in order, so row i of z1 and of z2 are still one image's views
            z1, z2 = dist.gather_with_grad(z1), dist.gather_with_grad(z2)
        o = self.options
        return vicreg_loss(z1, z2, sim_weight=o.sim_weight, var_weight=o.var_weight, cov_weight=o.cov_weight), {}

    def classifier_neck(self) -> None:
        """Fine-tuning starts from the encoder alone (no head layer is kept)."""
        return None

    def update_target(self, progress: float) -> None:
        """VICReg has no target network."""


def build(options: Options, encoder: nn.Module, feat_dim: int) -> VICReg:
    return VICReg(encoder, feat_dim, options)
