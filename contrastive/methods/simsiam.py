"""SimSiam (Chen & He 2021, arXiv:2011.10566).

One encoder and projector f for both views, a predictor h on top, and a stop-gradient:
p = h(f(x)), z = f(x), loss D(p1, z2) / 2 + D(p2, z1) / 2 with D the negative cosine
similarity and z a constant (Algorithm 1). No negatives, no momentum encoder.

Heads (sec. 3, baseline settings, and the official code): the projector has BN on every
layer, its output layer an affine-free BN and no ReLU; the predictor is a 2-layer
bottleneck with BN and ReLU on its hidden layer only.

Not implemented: the paper keeps the predictor's learning rate fixed instead of decaying
it (sec. 4.2, Table 1: a small gain; the official code's --fix-pred-lr); the schedule
belongs to the training loop, which treats every parameter alike. Nothing changes under
torchrun (a per-image loss, averaged by DDP); the official code's SyncBN is --sync-bn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from contrastive.batches import ViewSpec
from contrastive.fields import opt
from contrastive.heads import mlp
from contrastive.losses import simsiam_loss
from contrastive.methods.base import MethodOptions


@dataclass(frozen=True)
class Options(MethodOptions):
    proj_dim: int = opt(2048, "projector output width (SimSiam sec. 3: 2048)")
    proj_hidden: int = opt(2048, "projector hidden width (SimSiam sec. 3: 2048; the official code uses the "
                                 "encoder's width, 2048 for ResNet-50)")
    head_layers: int = opt(3, "projector depth (SimSiam sec. 3: 3 on ImageNet; appendix D uses 2 on CIFAR)")
    pred_hidden: int = opt(512, "predictor bottleneck width (SimSiam sec. 3: 512, a quarter of 2048)")

    VIEWS: ClassVar[ViewSpec] = ViewSpec("moco")  # SimSiam appendix A: MoCo v2's augmentations


# Base lr per 256 images. SGD 0.03: SimSiam appendix D (CIFAR-10, with weight decay 5e-4, the package's SGD
# default); lightly's CIFAR-10 benchmark's unscaled 0.06 at batch 512 is the same per 256; ImageNet uses 0.05
# with weight decay 1e-4 (sec. 3). LARS 0.3: not from the paper (SimSiam keeps SGD at every batch size,
# sec. 4.3), SimCLR's LARS value. AdamW 1e-3: a common small-batch choice, not from the paper.
BASE_LR = {"sgd": 0.03, "lars": 0.3, "adamw": 1e-3}
SHAPE = ("proj_dim", "proj_hidden", "head_layers", "pred_hidden")  # options that shape the weights


class SimSiam(nn.Module):
    def __init__(self, encoder: nn.Module, feat_dim: int, options: Options = Options()):
        super().__init__()
        o = options
        self.options = o
        self.encoder = encoder
        self.projector = mlp(feat_dim, o.proj_hidden, o.proj_dim, o.head_layers, batch_norm=True, last_bn=True)
        self.predictor = mlp(o.proj_dim, o.pred_hidden, o.proj_dim, 2, batch_norm=True)  # bottleneck, output w/o BN

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """z = f(x): (n, ...) -> (n, proj_dim)."""
        return self.projector(self.encoder(x))

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        x1, x2 = views
        # Each view is its own batch (BN statistics per view), as in the official code.
        z1, z2 = self.project(x1), self.project(x2)  # (n, proj_dim) each
        p1, p2 = self.predictor(z1), self.predictor(z2)  # (n, proj_dim) each
        # Each view's prediction against the other view's projection; simsiam_loss detaches z.
        loss = simsiam_loss(p1, z2) / 2 + simsiam_loss(p2, z1) / 2
        return loss, {}

    def classifier_neck(self) -> None:
        """Fine-tuning starts from the encoder alone (no head layer is kept)."""
        return None

    def update_target(self, progress: float) -> None:
        """SimSiam has no target network: the stop-gradient takes its place."""


def build(options: Options, encoder: nn.Module, feat_dim: int) -> SimSiam:
    return SimSiam(encoder, feat_dim, options)
