"""The methods: plain nn.Modules with one contract.

    loss, metrics = method(views)     # views: list of two (N, C, H, W) batches
    method.update_target(progress)    # optional: EMA step after the optimizer step, progress = step / total
    method.encoder                    # the backbone that evaluation uses

They know nothing of optimizers, devices or logging. What multi-process training changes
inside a method (SimCLR's gathered negatives, MoCo's shuffled keys and shared queue) goes
through contrastive.distributed, whose helpers are identities on one process.
"""

from __future__ import annotations

from torch import nn

from contrastive.methods.byol import BYOL
from contrastive.methods.moco import MoCo
from contrastive.methods.simclr import SimCLR


def build_method(cfg, encoder: nn.Module, feat_dim: int) -> nn.Module:
    """The method module for a resolved PretrainConfig."""
    hidden = cfg.proj_hidden or feat_dim  # SimCLRv2 / MoCo v2: hidden width = encoder width
    if cfg.method == "simclr":
        return SimCLR(encoder, feat_dim, hidden, cfg.proj_dim, cfg.head_layers, cfg.temperature, gather=cfg.gather)
    if cfg.method == "moco":
        return MoCo(encoder, feat_dim, hidden, cfg.proj_dim, cfg.head_layers, cfg.temperature,
                    cfg.queue_size, cfg.ema, cfg.symmetric, bn_splits=cfg.bn_splits or 1, shuffle_bn=cfg.shuffle_bn)
    if cfg.method == "byol":
        return BYOL(encoder, feat_dim, cfg.proj_hidden or 4096, cfg.proj_dim, cfg.pred_hidden, cfg.ema)
    raise ValueError(f"unknown method {cfg.method}")


__all__ = ["SimCLR", "MoCo", "BYOL", "build_method"]
