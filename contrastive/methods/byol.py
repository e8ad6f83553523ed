"""BYOL (Grill et al. 2020, arXiv:2006.07733).

Online network: encoder -> projector -> predictor. Target network: an EMA copy of the
encoder and projector, no predictor, no gradients. Loss: 2 - 2 cos(p, z), symmetrised
by swapping the views (eq. 2 and L + L~). The EMA rate goes from tau_base to 1 on a
cosine schedule over training (sec. 3.3).

Nothing here changes under torchrun: DDP keeps the online weights equal on every rank,
so the EMA target's weights stay equal too. The paper's global BN is --sync-bn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from contrastive.batches import ViewSpec
from contrastive.fields import opt
from contrastive.heads import byol_mlp
from contrastive.losses import byol_loss
from contrastive.methods.base import MethodOptions
from contrastive.momentum import cosine_ema, ema_update, frozen_copy


@dataclass(frozen=True)
class Options(MethodOptions):
    proj_dim: int = opt(256, "projection output width (BYOL sec. 3.3: 256)")
    proj_hidden: int = opt(4096, "projector hidden width (BYOL sec. 3.3: 4096)")
    pred_hidden: int = opt(4096, "predictor hidden width (BYOL sec. 3.3: 4096)")
    ema: float = opt(0.996, "base EMA rate tau of the target, raised to 1 on a cosine (BYOL sec. 3.3: 0.996)")

    VIEWS: ClassVar[ViewSpec] = ViewSpec("byol")  # BYOL table 6: the asymmetric pair


# Base lr per 256 images: LARS 0.2 x B/256 (BYOL sec. 3.3), AdamW 1e-3 (not from the paper).
# SGD 0.06 per 256: the MoCo CIFAR demo's value (0.06, there at batch 512) taken per 256; lightly's
# CIFAR-10 benchmarks use 0.06 x batch/128 (0.12 per 256). Every number in BENCHMARKS.md was measured with 0.06.
BASE_LR = {"sgd": 0.06, "lars": 0.2, "adamw": 1e-3}
SHAPE = ("proj_dim", "proj_hidden", "pred_hidden")  # options that shape the weights


class BYOL(nn.Module):
    def __init__(self, encoder: nn.Module, feat_dim: int, options: Options = Options()):
        super().__init__()
        o = options
        self.options = o
        self.encoder = encoder
        self.projector = byol_mlp(feat_dim, o.proj_hidden, o.proj_dim)
        self.predictor = byol_mlp(o.proj_dim, o.pred_hidden, o.proj_dim)
        self.target_encoder = frozen_copy(self.encoder)
        self.target_projector = frozen_copy(self.projector)
        self.register_buffer("tau", torch.tensor(o.ema, dtype=torch.float64))

    def online(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.projector(self.encoder(x)))

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        return self.target_projector(self.target_encoder(x))

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        x1, x2 = views
        # Each view is its own batch (BN statistics per view), as in the paper's code.
        p1, p2 = self.online(x1), self.online(x2)
        z1, z2 = self.target(x1), self.target(x2)
        loss = byol_loss(p1, z2) + byol_loss(p2, z1)
        return loss, {"tau": float(self.tau)}

    def classifier_neck(self) -> None:
        """Fine-tuning starts from the encoder alone (no head layer is kept)."""
        return None

    @torch.no_grad()
    def update_target(self, progress: float) -> None:
        """EMA step with tau = cosine_ema(tau_base, k / K)."""
        tau = cosine_ema(self.options.ema, progress)
        self.tau.fill_(tau)
        ema_update(self.target_encoder, self.encoder, tau)
        ema_update(self.target_projector, self.projector, tau)


def build(options: Options, encoder: nn.Module, feat_dim: int) -> BYOL:
    return BYOL(encoder, feat_dim, options)
