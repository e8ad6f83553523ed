"""Deep InfoMax, local objective (Hjelm et al. 2019, arXiv:1808.06670): DIM(L).

Maximise the mutual information between the global feature of an item and each of its
local features. The encoder gives both: `encoder.local_features(x)` (N, D, H, W), or
(N, D, L) for sequences, and `encoder(x)` (N, feat_dim). Each is embedded by a small
network with a linear shortcut (1x1 convolutions for the locations, an MLP for the global
feature), and the score of a pair is their dot product ("encode-and-dot-product", sec. 3.2
and appendix A.2). The MI is estimated with the Jensen-Shannon bound (eq. 4), positives
being each location with its own item's global feature, negatives every location with
every other item's (losses.local_global_jsd_loss). `estimator nce` swaps in the paper's
noise-contrastive estimator (losses.local_global_nce_loss: each location against every
location of the other items, for the same global feature). The paper's DIM(L) weights are
alpha = 0 (global), beta = 1 (local), gamma = 0.1 (prior matching).

`cross_view` is the step from DIM to AMDIM (Bachman et al. 2019, arXiv:1906.00910, sec. 3.2):
each item is seen in two augmented views, and the local features of each view are scored
against the global feature of the other (both directions, averaged), so that what the two
share, and not the input one view holds, is what the score rewards. DIM as published sees
one view (the default).

Not implemented: the global objective (alpha, 0 in DIM(L)) and the adversarial prior
matching (gamma), which needs a discriminator trained against the encoder. The local map
is the backbone's last map before pooling (the paper takes an intermediate layer, and
computes the global feature from it with more layers). Under torchrun the negatives are
the process's own items (the loss is per batch; DDP averages it).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from contrastive.batches import ViewSpec
from contrastive.errors import ContrastiveError
from contrastive.fields import opt
from contrastive.losses import local_global_jsd_loss, local_global_nce_loss
from contrastive.methods.base import MethodOptions


@dataclass(frozen=True)
class Options(MethodOptions):
    embed_dim: int = opt(512, "width of the score space of the local and global embeddings (not from the paper: "
                              "a CPU-sized choice)")
    embed_hidden: int = opt(512, "hidden width of the two embedding networks (not from the paper)")
    local_weight: float = opt(1.0, "beta, the weight of the local MI term (DIM(L): 1.0)")
    estimator: str = opt("jsd", "the MI estimator: jsd (Jensen-Shannon, eq. 4, the paper's main choice) or nce "
                                "(InfoNCE, the paper's alternative with many negatives, sec. 3.1)",
                         choices=lambda: tuple(ESTIMATORS))
    stabilise: bool = opt(False, "with estimator nce: AMDIM's stabilised scores (divided by sqrt(embed_dim), "
                                 "soft-clipped at 10, mean square times 0.05 added; official costs.py); off: raw "
                                 "dot products, as DIM")
    cross_view: bool = opt(False, "score the locations of each of two augmented views against the other view's "
                                  "global feature (AMDIM, Bachman et al. 2019); off: one view, DIM as published")

    # one light view per item: DIM contrasts an item's parts with its whole, not two views
    VIEWS: ClassVar[ViewSpec] = ViewSpec("light", global_views=1)
    # cross_view: AMDIM's augmentation (crops, colour jitter, grayscale) is SimCLR's family
    TWO_VIEWS: ClassVar[ViewSpec] = ViewSpec("simclr", global_views=2)

    def finish(self, *, world_size: int = 1, local_batch: int = 1) -> "Options":
        """Checks the options that only go together: AMDIM's stabilised scores are for the NCE estimator."""
        if self.stabilise and self.estimator != "nce":
            raise ContrastiveError(f"--stabilise is for the NCE estimator (AMDIM's scores), not {self.estimator}; "
                                   f"add --estimator nce or drop --stabilise")
        return self

    def views(self) -> ViewSpec:
        """One view, or two with `cross_view` (AMDIM)."""
        return self.TWO_VIEWS if self.cross_view else self.VIEWS


# Base lr per 256 images. AdamW 1e-4: the paper trains with Adam at 1e-4 (appendix A.2). SGD 0.01: not from the
# paper; the scores are unnormalised dot products, and at 0.06 the loss diverged on the embedded digits (small_cnn,
# 2 epochs) while 0.01 took kNN top-1 0.488 -> 0.548 in 3 epochs of 2000 images. LARS 0.3: SimCLR's, not checked.
BASE_LR = {"sgd": 0.01, "lars": 0.3, "adamw": 1e-4}
SHAPE = ("embed_dim", "embed_hidden")  # options that shape the weights
ESTIMATORS = {"jsd": local_global_jsd_loss, "nce": local_global_nce_loss}


@runtime_checkable
class LocalFeatures(Protocol):
    """An encoder that also gives its features before pooling (small_cnn, vit_tiny, the code encoders)."""

    local_dim: int  # D, the width of each location's feature

    def local_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D, H, W), or (N, D, L) for sequences."""


def local_width(encoder: nn.Module) -> int:
    """The width D of encoder.local_features, which DIM and CPC need."""
    if not isinstance(encoder, LocalFeatures):
        raise ValueError("this method needs an encoder with local_features(x) and local_dim (e.g. small_cnn, vit_tiny)")
    return int(encoder.local_dim)


class Embed(nn.Module):
    """x -> ReLU-MLP(x) + Linear(x), along dim 1: (N, in) or (N, in, L)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, along_positions: bool):
        super().__init__()
        layer = (lambda i, o: nn.Conv1d(i, o, 1)) if along_positions else nn.Linear  # a 1x1 conv is per location
        self.block = nn.Sequential(layer(in_dim, hidden), nn.ReLU(inplace=True), layer(hidden, out_dim))
        self.shortcut = layer(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + self.shortcut(x)


class DeepInfoMax(nn.Module):
    def __init__(self, encoder: nn.Module, feat_dim: int, options: Options = Options()):
        super().__init__()
        o = options
        self.options = o
        local_dim = local_width(encoder)
        self.encoder = encoder
        self.local_weight, self.cross_view = o.local_weight, o.cross_view
        self.loss = ESTIMATORS[o.estimator]
        if o.stabilise:
            if o.estimator != "nce":
                raise ValueError("stabilise applies to estimator nce (AMDIM's), not " + o.estimator)
            self.loss = functools.partial(local_global_nce_loss, stabilise=True)
        self.local_embed = Embed(local_dim, o.embed_hidden, o.embed_dim, along_positions=True)
        self.global_embed = Embed(feat_dim, o.embed_hidden, o.embed_dim, along_positions=False)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embedded locations (N, E, L), embedded global feature (N, E)) of one view."""
        local = self.encoder.local_features(x).flatten(2)  # (N, D, L): locations in a row
        pooled = self.encoder(x)  # (N, feat_dim)
        return self.local_embed(local), self.global_embed(pooled)

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        if not self.cross_view:
            loss = self.loss(*self.embed(views[0]))
        elif len(views) < 2:
            raise ValueError("Deep InfoMax with cross_view needs two views of each item")
        else:  # AMDIM: each view's locations against the other view's global feature
            (l1, g1), (l2, g2) = self.embed(views[0]), self.embed(views[1])
            loss = (self.loss(l1, g2) + self.loss(l2, g1)) / 2
        return self.local_weight * loss, {}

    def classifier_neck(self) -> None:
        """Fine-tuning starts from the encoder alone (no head layer is kept)."""
        return None

    def update_target(self, progress: float) -> None:
        """Deep InfoMax has no target network."""


def build(options: Options, encoder: nn.Module, feat_dim: int) -> DeepInfoMax:
    return DeepInfoMax(encoder, feat_dim, options)
