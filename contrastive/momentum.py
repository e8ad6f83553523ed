"""Momentum (EMA) encoders: frozen copies, the update rule and BYOL's schedule."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with requires_grad=False everywhere: a target / key network."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, m: float) -> None:
    """target <- m * target + (1 - m) * online, for parameters only.

    MoCo eq. 2 (theta_k <- m theta_k + (1 - m) theta_q) and BYOL eq. 1. As in the original
    MoCo and BYOL code, buffers (BN running statistics) are not averaged: the target runs
    in train mode and keeps its own statistics.
    """
    t_params = [p for p in target.parameters()]
    o_params = [p.detach() for p in online.parameters()]
    torch._foreach_mul_(t_params, m)
    torch._foreach_add_(t_params, o_params, alpha=1.0 - m)


def cosine_ema(base: float, progress: float) -> float:
    """BYOL sec. 3.3: tau = 1 - (1 - tau_base) * (cos(pi * k / K) + 1) / 2, progress = k / K in [0, 1]."""
    progress = min(max(progress, 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
