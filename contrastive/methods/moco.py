"""MoCo v2 (He et al. 2020, arXiv:1911.05722; Chen et al. 2020, arXiv:2003.04297).

A query encoder trained by gradient, a key encoder that follows it by momentum, and a
FIFO queue of past keys as the negatives of InfoNCE.

Order of operations per step (the paper's Algorithm 1 and the official code): the key
encoder is updated by momentum, keys are computed without gradients, the loss uses the
queue as it was, then the new keys are enqueued. Here the momentum update is called by
the training loop right after the optimizer step (`update_target`), which is the same
sequence: the official code's update at the start of step t+1 and ours at the end of
step t both come between the optimizer step of t and the keys of t+1.

Batch norm (MoCo sec. 3.3, "shuffling BN"): with BN computed per GPU, a query and its
key would share batch statistics, a shortcut to find the positive. The keys' batch is
therefore shuffled across ranks (`distributed.shuffle_across_ranks`) before the key
encoder and put back in order after. On one process, `bn_splits` > 1 turns every
BatchNorm2d of both encoders into SplitBatchNorm2d (the MoCo CIFAR demo's simulation of
8 GPUs) and the shuffle mixes the split groups. Under torchrun the keys of every rank
are gathered and enqueued in rank order, so every rank holds the same queue; the loss
of each rank is over its own queries, and DDP's average makes it the global mean.
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
from contrastive.errors import ContrastiveError
from contrastive.fields import opt
from contrastive.heads import moco_head
from contrastive.losses import info_nce
from contrastive.methods.base import MethodOptions
from contrastive.momentum import ema_update, frozen_copy
from contrastive.norm import convert_split_bn


@dataclass(frozen=True)
class Options(MethodOptions):
    temperature: float = opt(0.2, "InfoNCE temperature (MoCo v2, arXiv:2003.04297: 0.2)", positive=True)
    proj_dim: int = opt(128, "projection output width (MoCo: 128)")
    proj_hidden: int | None = opt(None, "projection hidden width; default the encoder's width (MoCo v2: 2048 for ResNet-50)")
    head_layers: int = opt(2, "projection head depth (MoCo v2: a 2-layer MLP, no BN)")
    queue_size: int = opt(4096, "queue length K; the MoCo CIFAR demo finds 4096 saturates on CIFAR")
    ema: float = opt(0.99, "key-encoder momentum m (MoCo CIFAR demo: 0.99; 0.999 in the paper at 200 ImageNet epochs)")
    symmetric: bool = opt(False, "also swap the crops and add the second loss (the MoCo CIFAR demo's option); "
                                 "off: the paper's asymmetric loss")
    bn_splits: int | None = opt(None, "BN over this many groups of each process's batch; default 8 on one process "
                                      "(the MoCo CIFAR demo's split BN, simulating 8 GPUs), 1 under torchrun")
    shuffle_bn: bool = opt(True, "compute keys on a batch shuffled across processes / BN splits, so BN cannot leak "
                                 "which key matches a query (MoCo sec. 3.3)")

    VIEWS: ClassVar[ViewSpec] = ViewSpec("moco")  # MoCo v2's "aug+" recipe

    def finish(self, *, world_size: int = 1, local_batch: int = 1) -> "Options":
        """The defaults that depend on the run: BN splits. On one process MoCo simulates the paper's
        8 GPUs with 8 BN groups (MoCo CIFAR demo); under torchrun each rank's BN is already local."""
        splits = self.bn_splits
        if splits is None:
            splits = 8 if world_size == 1 and local_batch % 8 == 0 else 1
        if splits < 1 or local_batch % splits:
            raise ContrastiveError(f"--bn-splits {splits} must be at least 1 and divide the batch of each process "
                                   f"({local_batch}); pass a divisor of {local_batch}")
        return dataclasses.replace(self, bn_splits=splits)

    def distributed_note(self) -> str:
        shuffled = "on a batch shuffled across processes" if self.shuffle_bn else "without shuffling"
        return f"MoCo keys {shuffled}; every process enqueues all keys"


# Base lr per 256 images: LARS 0.3 (as SimCLR), AdamW 1e-3 (not from the paper).
# SGD 0.06 per 256: the MoCo CIFAR demo's value (0.06, there at batch 512) taken per 256; lightly's
# CIFAR-10 benchmarks use 0.06 x batch/128 (0.12 per 256). Every number in BENCHMARKS.md was measured with 0.06.
BASE_LR = {"sgd": 0.06, "lars": 0.3, "adamw": 1e-3}
SHAPE = ("proj_dim", "proj_hidden", "head_layers", "queue_size")  # options that shape the weights


class MoCo(nn.Module):
    def __init__(self, encoder: nn.Module, feat_dim: int, options: Options = Options()):
        super().__init__()
        o = options
        self.options = o
        # bn_splits None (options not finished for a run, e.g. built directly): one group, plain BN
        self.bn_splits = o.bn_splits or 1
        self.encoder = convert_split_bn(encoder, self.bn_splits)  # in place; the key encoder is a copy of it
        self.projector = moco_head(feat_dim, o.proj_hidden or feat_dim, o.proj_dim, o.head_layers)
        self.key_encoder = frozen_copy(self.encoder)
        self.key_projector = frozen_copy(self.projector)
        # The dictionary: K normalised keys (K, D), filled at random as in the official code.
        self.register_buffer("queue", F.normalize(torch.randn(o.queue_size, o.proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def query(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))

    @torch.no_grad()
    def key(self, x: torch.Tensor) -> torch.Tensor:
        """(n, C, H, W) -> (n, D) normalised keys, row i for image i, from a shuffled batch when
        shuffling can change the key encoder's batch statistics (several ranks or BN splits)."""
        if not (self.options.shuffle_bn and (dist.world_size() > 1 or self.bn_splits > 1)):
            return self._encode_key(x)
        x, unshuffle = dist.shuffle_across_ranks(x)
        return unshuffle(self._encode_key(x))

    def _encode_key(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.key_projector(self.key_encoder(x)).float(), dim=1)

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        x1, x2 = views
        queue = self.queue.clone()  # the loss sees the queue before this step's keys go in
        k2 = self.key(x2)
        loss = info_nce(self.query(x1), k2, queue, self.options.temperature)
        keys = k2
        if self.options.symmetric:
            # MoCo CIFAR demo: swap the crops, add the two losses, enqueue both sets of keys.
            k1 = self.key(x1)
            loss = loss + info_nce(self.query(x2), k1, queue, self.options.temperature)
            keys = torch.cat([k1, k2])
        self.enqueue(dist.gather(keys))  # (world * keys, D), rank 0's keys first
        return loss, {}

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest len(keys) entries (FIFO), wrapping around the end of the queue."""
        size = self.queue.shape[0]
        if keys.shape[0] > size:
            raise ValueError(f"MoCo: {keys.shape[0]} keys per step (over all processes) do not fit a queue of "
                             f"{size}; raise --queue-size")
        idx = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    def classifier_neck(self) -> None:
        """Fine-tuning starts from the encoder alone (no head layer is kept)."""
        return None

    @torch.no_grad()
    def update_target(self, progress: float) -> None:
        """Momentum update (constant m, MoCo eq. 2); `progress` is unused."""
        ema_update(self.key_encoder, self.encoder, self.options.ema)
        ema_update(self.key_projector, self.projector, self.options.ema)


def build(options: Options, encoder: nn.Module, feat_dim: int) -> MoCo:
    return MoCo(encoder, feat_dim, options)
