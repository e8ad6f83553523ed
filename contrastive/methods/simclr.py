"""SimCLR (Chen et al. 2020, arXiv:2002.05709; v2 head: arXiv:2006.10029).

Two views through one encoder and projection head; NT-Xent over the 2N projections.

Under torchrun with `gather` on, the negatives are the global batch: every rank gathers
the projections of all ranks (with gradients, `distributed.gather_with_grad`) and solves
the same global 2N x 2N problem, so loss and gradients equal one process on the global
batch. The cost is a (2N, 2N) similarity matrix on every rank instead of (2n, 2N); at
CIFAR batch sizes that is small. With `gather` off each rank contrasts its own batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from contrastive import distributed as dist
from contrastive.batches import ViewSpec
from contrastive.fields import opt
from contrastive.heads import mlp, simclr_head_shape
from contrastive.losses import nt_xent
from contrastive.methods.base import MethodOptions


@dataclass(frozen=True)
class Options(MethodOptions):
    # T 0.2 on code. On the whole Juliet suite (AdamW bag, 8 epochs, whole flaw variants a batch, 3 draws of 1%
    # labels, validation PR-AUC; benchmarks/results/juliet_levers.md) T 0.2 read 0.613 with a tuned probe and 0.695
    # fine-tuned, against 0.552 and 0.677 at T 0.5: a sharper softmax weighs the hard negatives, the twins, more.
    DATA_DEFAULTS: ClassVar[dict] = {"code": {"temperature": 0.2}}

    temperature: float = opt(0.5, "NT-Xent softmax temperature (SimCLR appendix B.9: 0.5 for CIFAR-10; code data: "
                                  "0.2, chosen on Juliet's validation split)", positive=True)
    proj_dim: int = opt(128, "projection output width (SimCLR sec. 2.1: 128)")
    proj_hidden: int | None = opt(None, "projection hidden width; default the encoder's width (SimCLRv2 sec. 2)")
    head_layers: int = opt(3, "projection head depth (SimCLRv2 sec. 2: 3 layers with BN; v1: 2)")
    gather: bool = opt(True, "under torchrun: negatives from the global batch of every process, exact gradients")

    VIEWS: ClassVar[ViewSpec] = ViewSpec("simclr")  # the modality's view recipe (images: SimCLR appendix A)

    def distributed_note(self) -> str:
        return "SimCLR negatives from the global batch" if self.gather else "SimCLR negatives from each process"


# Base lr per 256 images, by optimizer. LARS 0.3 x B/256: SimCLR appendix B.1; AdamW: a common small-batch
# choice, not from the paper.
# SGD 0.06 per 256: the MoCo CIFAR demo's value (0.06, there at batch 512) taken per 256; lightly's
# CIFAR-10 benchmarks use 0.06 x batch/128 (0.12 per 256). Every number in BENCHMARKS.md was measured with 0.06.
BASE_LR = {"sgd": 0.06, "lars": 0.3, "adamw": 1e-3}
SHAPE = ("proj_dim", "proj_hidden", "head_layers")  # options that shape the weights: a resume must share them


class SimCLR(nn.Module):
    def __init__(self, encoder: nn.Module, feat_dim: int, options: Options = Options()):
        super().__init__()
        o = options
        self.options = o
        self.encoder = encoder
        self.head_shape = simclr_head_shape(feat_dim, o.proj_hidden or feat_dim, o.proj_dim, o.head_layers)
        self.projector = mlp(**self.head_shape)

    def classifier_neck(self) -> dict | None:
        """What fine-tuning starts from beyond the encoder: the first head layer (SimCLRv2 sec. 2).
        With a one-layer head that layer is the output projection, not a hidden layer: nothing to keep."""
        if len(self.projector) < 2:
            return None
        return {"prefix": "projector.", "keep": 1, "mlp": self.head_shape}

    def update_target(self, progress: float) -> None:
        """SimCLR has no target network."""

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        x1, x2 = views
        # Both views in one batch, as the official implementation does: BN sees all 2n images
        # of this process (all 2N with --sync-bn). n: this process's batch, N: the global one.
        z = self.projector(self.encoder(torch.cat([x1, x2])))  # (2n, proj_dim)
        z1, z2 = z.chunk(2)  # (n, proj_dim) each, this rank's batch
        if self.options.gather:  # negatives from every rank (a no-op on one process)
            # (N, proj_dim) each, ranks in order, so row i of z1 and of z2 are still one image's views
            z1, z2 = dist.gather_with_grad(z1), dist.gather_with_grad(z2)
        return nt_xent(z1, z2, self.options.temperature), {}


def build(options: Options, encoder: nn.Module, feat_dim: int) -> SimCLR:
    return SimCLR(encoder, feat_dim, options)
