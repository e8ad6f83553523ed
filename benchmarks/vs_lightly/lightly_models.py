"""lightly's recipes for SimCLR, MoCo v2 and BYOL (our code; the recipe is lightly's), the transforms of every
method, and `build_lightly`, which builds any compared method around a lightly-side backbone.

The lightly recipes follow lightly's CIFAR-10 benchmark script,
lightly-ai/lightly: docs/source/getting_started/benchmarks/cifar10_benchmark.py (versions read through
the search tool; the 2023+ versions use lightly.transforms, older ones the equivalent collate functions):
  backbone   ResNetGenerator("resnet-18") (CIFAR ResNet-18: 3x3 stride-1 stem, no max-pool; MoCo with
             num_splits=8 split batch norm), children[:-1] + AdaptiveAvgPool2d(1)
  transforms SimCLR and MoCo: SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0);
             BYOL: BYOLTransform(BYOLView1Transform(input_size=32, gaussian_blur=0.0),
                                 BYOLView2Transform(input_size=32, gaussian_blur=0.0))
  SimCLR     SimCLRProjectionHead(512, 512, 128), NTXentLoss() (temperature 0.5)
  MoCo v2    MoCoProjectionHead(512, 512, 128), momentum copies updated with update_momentum(m=0.99) at the
             start of each step, batch_shuffle / batch_unshuffle for the keys, NTXentLoss(temperature=0.1,
             memory_bank_size=4096), symmetric loss 0.5 * (L(x0, x1) + L(x1, x0))
  BYOL       BYOLProjectionHead(512, 1024, 256), BYOLPredictionHead(256, 1024, 256), update_momentum(m=0.99),
             NegativeCosineSimilarity, loss 0.5 * (L(p0, z1) + L(p1, z0))
  optimizer  SGD(lr=0.06 * batch / 128, momentum 0.9, weight_decay 5e-4) on all trainable parameters,
             CosineAnnealingLR(max_epochs) stepped once per epoch; fp32 (the Lightning Trainer's default)
  kNN        k=200, T=0.1 (the same monitor as ours)
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .backbones import lightly_backbone
from .common import MULTICROP
from .lightly_more import LightlyDINO, LightlyRedundancy, LightlySimSiam, LightlySwAV


def lightly_transform(method: str):
    """lightly's per-image transform producing `method`'s views (see the module docstring)."""
    from lightly.transforms import (BYOLTransform, BYOLView1Transform, BYOLView2Transform, DINOTransform,
                                    SimCLRTransform, SimSiamTransform)

    if method in ("simclr", "moco", "barlow_twins", "vicreg"):
        return SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0)
    if method == "simsiam":  # MoCo v2's views (SimSiam appendix A), as our "moco" recipe; no blur at 32 px
        return SimSiamTransform(input_size=32, gaussian_blur=0.0)
    if method in MULTICROP:  # the views of our "multicrop" recipe at 32 px: 2 x 32 (0.4-1) + 6 x 16 (0.05-0.4),
        # jitter 0.5 x (0.8, 0.8, 0.4, 0.2) = (0.4, 0.4, 0.2, 0.1), no blur below 64 px, solarize 0.2 on view 2
        return DINOTransform(global_crop_size=32, local_crop_size=16, n_local_views=6, gaussian_blur=(0.0, 0.0, 0.0))
    return BYOLTransform(view_1_transform=BYOLView1Transform(input_size=32, gaussian_blur=0.0),
                         view_2_transform=BYOLView2Transform(input_size=32, gaussian_blur=0.0))


class LightlySimCLR(nn.Module):
    def __init__(self, backbone: nn.Module, dim: int):
        super().__init__()
        from lightly.loss import NTXentLoss
        from lightly.models.modules.heads import SimCLRProjectionHead

        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(dim, dim, 128)
        self.criterion = NTXentLoss()  # temperature 0.5

    def embed(self, x):
        return self.projection_head(self.backbone(x).flatten(start_dim=1))

    def training_loss(self, x0, x1):
        return self.criterion(self.embed(x0), self.embed(x1))

    def trainable(self):
        return list(self.parameters())


class LightlyMoCo(nn.Module):
    def __init__(self, backbone: nn.Module, dim: int, m: float = 0.99):
        super().__init__()
        from lightly.loss import NTXentLoss
        from lightly.models.modules.heads import MoCoProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        self.backbone = backbone
        self.projection_head = MoCoProjectionHead(dim, dim, 128)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NTXentLoss(temperature=0.1, memory_bank_size=(4096, 128))
        self.m = m

    def training_loss(self, x0, x1):
        from lightly.models.utils import batch_shuffle, batch_unshuffle, update_momentum

        update_momentum(self.backbone, self.backbone_momentum, self.m)
        update_momentum(self.projection_head, self.projection_head_momentum, self.m)

        def queries_and_keys(xq, xk):
            xk, shuffle = batch_shuffle(xk)
            q = self.projection_head(self.backbone(xq).flatten(start_dim=1))
            k = self.projection_head_momentum(self.backbone_momentum(xk).flatten(start_dim=1))
            return q, batch_unshuffle(k, shuffle)

        return 0.5 * (self.criterion(*queries_and_keys(x0, x1)) + self.criterion(*queries_and_keys(x1, x0)))

    def trainable(self):
        return list(self.backbone.parameters()) + list(self.projection_head.parameters())


class LightlyBYOL(nn.Module):
    def __init__(self, backbone: nn.Module, dim: int, m: float = 0.99):
        super().__init__()
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules.heads import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(dim, 1024, 256)
        self.prediction_head = BYOLPredictionHead(256, 1024, 256)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NegativeCosineSimilarity()
        self.m = m

    def online(self, x):
        return self.prediction_head(self.projection_head(self.backbone(x).flatten(start_dim=1)))

    def target(self, x):
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()

    def training_loss(self, x0, x1):
        from lightly.models.utils import update_momentum

        update_momentum(self.backbone, self.backbone_momentum, self.m)
        update_momentum(self.projection_head, self.projection_head_momentum, self.m)
        p0, z0, p1, z1 = self.online(x0), self.target(x0), self.online(x1), self.target(x1)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))

    def trainable(self):
        return (list(self.backbone.parameters()) + list(self.projection_head.parameters())
                + list(self.prediction_head.parameters()))


def build_lightly(method: str, arch: str, seed: int = 0) -> nn.Module:
    """`method` in lightly's recipe (or, beyond the three, ours around lightly's parts) on a fresh backbone."""
    torch.manual_seed(seed)
    backbone, dim = lightly_backbone(method, arch)
    if method in ("barlow_twins", "vicreg"):
        return LightlyRedundancy(backbone, dim, method)
    return {"simclr": LightlySimCLR, "moco": LightlyMoCo, "byol": LightlyBYOL, "simsiam": LightlySimSiam,
            "dino": LightlyDINO, "swav": LightlySwAV}[method](backbone, dim)


def lightly_encoder(model: nn.Module) -> nn.Module:
    """What the kNN reads: the backbone's pooled features, flattened."""
    return nn.Sequential(model.backbone, nn.Flatten())

