"""SwAV (Caron et al. 2020, arXiv:2006.09882): swapping assignments between views.

Backbone -> projector -> L2-normalised z, scored against K prototypes c_k (a linear layer
without bias whose rows are re-normalised before every training step): scores = z C^T.
For each global crop, Sinkhorn-Knopp turns its scores into codes q, soft assignments that
use every prototype equally over the batch (epsilon 0.05, 3 iterations); every other crop
predicts that code from its own scores with a softmax at temperature 0.1 (the swapped
prediction, losses.swapped_prediction_loss). Multi-crop views, global crops first; only
the global crops get codes (official crops_for_assign 0 1).

Small batches (sec. 4 and the official bs-256 recipe): a queue keeps the last
`queue_length` embeddings of each global crop; once it is full, the Sinkhorn runs on the
queue's scores and the batch's together (the codes of the batch are kept), so that the
equipartition holds over ~4k items rather than 256. The queue starts at `queue_start`
of training (official: epoch 15 of 200), holds no gradient and is not saved in
checkpoints (a resumed run refills it). The prototypes get a zero gradient for the first
`freeze_prototypes` steps (official: 313 iterations), which helps the start of training.

Under torchrun each process keeps queue_length / world rows, and the Sinkhorn's sums run
over every process's batch and queue (`distributed.all_reduce_sum`), as the official
distributed_sinkhorn does; the loss is per image and DDP averages it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from contrastive import distributed as dist
from contrastive.batches import ViewSpec
from contrastive.fields import opt
from contrastive.heads import mlp
from contrastive.losses import sinkhorn_knopp, swapped_prediction_loss
from contrastive.methods.base import MethodOptions
from contrastive.methods.crops import by_size


@dataclass(frozen=True)
class Options(MethodOptions):
    proj_dim: int = opt(128, "projection output width (SwAV sec. 4 / official --feat_dim: 128)")
    proj_hidden: int = opt(2048, "projector hidden width (official --hidden_mlp: 2048)")
    prototypes: int = opt(3000, "K, the number of prototypes (SwAV sec. 4: 3000 on ImageNet)")
    temperature: float = opt(0.1, "softmax temperature of the swapped prediction (SwAV sec. 4: 0.1)", positive=True)
    epsilon: float = opt(0.05, "entropy weight of the Sinkhorn codes (SwAV sec. 4: 0.05)")
    sinkhorn_iterations: int = opt(3, "Sinkhorn-Knopp iterations (SwAV sec. 3.1: 3)")
    queue_length: int = opt(3840, "embeddings kept per global crop for the codes of small batches, over all "
                                  "processes (official bs-256 recipe: 3840; 0: no queue)")
    queue_start: float = opt(0.075, "fraction of training after which the queue is filled (official: epoch 15 "
                                    "of 200)")
    freeze_prototypes: int = opt(313, "steps at the start with the prototypes frozen (official: 313 iterations)")
    local_queue: int = opt(0, "rows of the queue on each process (derived: queue_length / world size)", cli=False)

    # SwAV sec. 3.2: 2 global + small local crops (its colour steps are SimCLR's; DINO's here); the modality's
    # default number of local crops (images: --local-crops)
    VIEWS: ClassVar[ViewSpec] = ViewSpec("multicrop", global_views=2, local_views=None)

    def finish(self, *, world_size: int = 1, local_batch: int = 1) -> "Options":
        """Each process's queue: queue_length cut to a multiple of the global batch, split over the processes
        (official)."""
        batch = local_batch * world_size
        length = self.queue_length - self.queue_length % batch if self.queue_length >= batch else 0
        return dataclasses.replace(self, local_queue=length // world_size)

    def distributed_note(self) -> str:
        return f"SwAV Sinkhorn over every process's batch and queue ({self.local_queue} rows per process)"


# Base lr per 256 images. LARS 0.6: the official bs-256 recipe with the queue (4.8 at batch 4096 is 0.3 per 256).
# SGD 0.06: lightly's SGD value for its methods, not from the paper. AdamW 1e-3: not from the paper.
BASE_LR = {"sgd": 0.06, "lars": 0.6, "adamw": 1e-3}
SHAPE = ("proj_dim", "proj_hidden", "prototypes")  # options that shape the weights


class SwAV(nn.Module):
    def __init__(self, encoder: nn.Module, feat_dim: int, options: Options = Options()):
        super().__init__()
        o = options
        self.options = o
        self.encoder = encoder
        self.projector = mlp(feat_dim, o.proj_hidden, o.proj_dim, 2, batch_norm=True)  # Linear-BN-ReLU-Linear
        self.prototypes = nn.Linear(o.proj_dim, o.prototypes, bias=False)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # optimizer steps so far
        self.register_buffer("progress", torch.zeros((), dtype=torch.float64))
        # (2 global crops, rows, proj_dim), newest rows first; not saved: a resumed run refills it.
        self.register_buffer("queue", torch.zeros(2, o.local_queue, o.proj_dim), persistent=False)
        self.register_buffer("queued", torch.zeros((), dtype=torch.long), persistent=False)  # rows filled

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(self.encoder(x)), dim=1)  # (n, proj_dim)

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        if len(views) < 2:
            raise ValueError("SwAV needs at least two views (the global crops)")
        if self.training:
            with torch.no_grad():  # the prototypes live on the unit sphere (official: before every step)
                self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        w = self.prototypes.weight
        if int(self.steps) < self.options.freeze_prototypes:
            w = w.detach() + 0 * w  # zero gradient: frozen, but DDP still sees the parameter used
        z = by_size(self.embed, views)  # one (n, proj_dim) per crop
        scores = [zi @ w.T for zi in z]  # (n, K) per crop
        codes = [self.codes(i, scores[i], z[i]) for i in range(2)]
        loss = swapped_prediction_loss(scores, codes, self.options.temperature)
        return loss, {"queue": int(self.queued)}

    @torch.no_grad()
    def codes(self, crop: int, scores: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The Sinkhorn codes (n, K) of one global crop, with the queue's scores in front once it is full."""
        o, n = self.options, scores.shape[0]
        use_queue = self.training and o.local_queue > 0 and float(self.progress) >= o.queue_start
        full = use_queue and int(self.queued) >= o.local_queue
        if full:
            scores = torch.cat([self.queue[crop] @ self.prototypes.weight.T, scores])  # (rows + n, K)
        q = sinkhorn_knopp(scores, o.epsilon, o.sinkhorn_iterations, total=dist.all_reduce_sum)[-n:]
        if use_queue:  # newest first, oldest out (official)
            self.queue[crop] = torch.cat([z.detach().to(self.queue.dtype), self.queue[crop]])[:o.local_queue]
            if crop == 1:
                self.queued.fill_(min(o.local_queue, int(self.queued) + n))
        return q

    def classifier_neck(self) -> None:
        """Fine-tuning starts from the encoder alone (no head layer is kept)."""
        return None

    @torch.no_grad()
    def update_target(self, progress: float) -> None:
        """No target network: counts the steps (prototype freeze) and keeps the progress (queue start)."""
        self.steps += 1
        self.progress.fill_(progress)


def build(options: Options, encoder: nn.Module, feat_dim: int) -> SwAV:
    return SwAV(encoder, feat_dim, options)
