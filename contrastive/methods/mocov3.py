"""MoCo v3 (Chen, Xie & He 2021, arXiv:2104.02057).

Query encoder: backbone -> projector -> predictor. Momentum (key) encoder: an EMA copy
of the backbone and projector, no predictor, no gradients. No queue: the keys of the
current batch are the negatives. For normalised queries q and keys k of the other view,
logits = q k^T / T and each query's positive is its own image's key; the loss is the
cross-entropy times 2T (Algorithm 1 and the official code), symmetrised:
ctr(q1, k2) + ctr(q2, k1). The momentum goes from m_base to 1 on a half-cosine over
training (the official --moco-m-cos, as BYOL).

Heads as the paper describes them (and the official ViT code): a 3-layer projector and
a 2-layer predictor, hidden layers 4096-d with BN and ReLU, outputs 256-d followed by
an affine-free BN. The official ResNet-50 code differs: a 2-layer projector
(--head-layers 2) and no BN after the predictor's output.

Under torchrun with `gather` on, each rank's queries are contrasted with the keys of
every rank (`distributed.gather`, no gradient: keys are constants) and a query's
positive is at row n * rank + i of the gathered keys, as in the official code. DDP's
average of the ranks' losses makes the mean over the global batch. The key encoder is
updated identically on every rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from contrastive import distributed as dist
from contrastive.batches import ViewSpec
from contrastive.fields import opt
from contrastive.heads import mlp
from contrastive.losses import contrastive_loss
from contrastive.methods.base import MethodOptions
from contrastive.momentum import cosine_ema, ema_update, frozen_copy


@dataclass(frozen=True)
class Options(MethodOptions):
    temperature: float = opt(1.0, "softmax temperature T (official code: 1.0 for ResNets; 0.2 for ViTs)", positive=True)
    proj_dim: int = opt(256, "projector and predictor output width (MoCo v3 implementation details: 256)")
    proj_hidden: int = opt(4096, "projector hidden width (MoCo v3 implementation details: 4096)")
    head_layers: int = opt(3, "projector depth (MoCo v3 implementation details: 3; the official ResNet-50 code uses 2)")
    pred_hidden: int = opt(4096, "predictor hidden width (MoCo v3 implementation details: 4096)")
    ema: float = opt(0.99, "base momentum m of the key encoder, raised to 1 on a half-cosine (official code: 0.99; "
                           "0.996 for its 1000-epoch ResNet-50)")
    gather: bool = opt(True, "under torchrun: negatives from the keys of every process (official code)")

    VIEWS: ClassVar[ViewSpec] = ViewSpec("byol")  # MoCo v3 implementation details: BYOL's augmentations

    def distributed_note(self) -> str:
        return ("MoCo v3 negatives from the keys of every process" if self.gather
                else "MoCo v3 negatives from each process's keys")


# Base lr per 256 images. LARS 0.3: the official CONFIG.md for ResNet-50 at 300 and 1000 epochs (0.6 at 100;
# weight decay 1e-6, the package's LARS default). AdamW 1.5e-4: the official ViT recipe (with weight decay 0.1;
# the package's AdamW default is 1e-4). SGD 0.06: lightly's SGD value for its methods (MoCo v3 is not among
# them), not from the paper; on the embedded digits (small_cnn, batch 256) kNN top-1 went 0.56 -> 0.69 in 6 epochs.
BASE_LR = {"sgd": 0.06, "lars": 0.3, "adamw": 1.5e-4}
SHAPE = ("proj_dim", "proj_hidden", "head_layers", "pred_hidden")  # options that shape the weights


class MoCoV3(nn.Module):
    def __init__(self, encoder: nn.Module, feat_dim: int, options: Options = Options()):
        super().__init__()
        o = options
        self.options = o
        self.encoder = encoder
        self.projector = mlp(feat_dim, o.proj_hidden, o.proj_dim, o.head_layers, batch_norm=True, last_bn=True)
        self.predictor = mlp(o.proj_dim, o.pred_hidden, o.proj_dim, 2, batch_norm=True, last_bn=True)
        self.key_encoder = frozen_copy(self.encoder)
        self.key_projector = frozen_copy(self.projector)
        self.register_buffer("momentum", torch.tensor(o.ema, dtype=torch.float64))  # the last EMA rate used

    def query(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.projector(self.encoder(x)))

    @torch.no_grad()
    def key(self, x: torch.Tensor) -> torch.Tensor:
        return self.key_projector(self.key_encoder(x))

    def ctr(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """This rank's n queries against the keys of every rank (of this rank alone without `gather`)."""
        temperature = self.options.temperature
        if not self.options.gather:
            return contrastive_loss(q, k, 0, temperature)
        k = F.normalize(k.float(), dim=1)  # gathered in float32, as the loss will see them
        return contrastive_loss(q, dist.gather(k), q.shape[0] * dist.rank(), temperature)

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        x1, x2 = views
        # Each view is its own batch (BN statistics per view), as in the official code.
        q1, q2 = self.query(x1), self.query(x2)  # (n, proj_dim) each
        k1, k2 = self.key(x1), self.key(x2)  # (n, proj_dim) each, no gradient
        loss = self.ctr(q1, k2) + self.ctr(q2, k1)
        return loss, {"momentum": float(self.momentum)}

    def classifier_neck(self) -> None:
        """Fine-tuning starts from the encoder alone (no head layer is kept)."""
        return None

    @torch.no_grad()
    def update_target(self, progress: float) -> None:
        """EMA step with m = cosine_ema(m_base, k / K) (official adjust_moco_momentum)."""
        m = cosine_ema(self.options.ema, progress)
        self.momentum.fill_(m)
        ema_update(self.key_encoder, self.encoder, m)
        ema_update(self.key_projector, self.projector, m)


def build(options: Options, encoder: nn.Module, feat_dim: int) -> MoCoV3:
    return MoCoV3(encoder, feat_dim, options)
