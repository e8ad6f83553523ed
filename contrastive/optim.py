"""Optimizers and the learning-rate schedule.

Weight decay never applies to BN parameters or biases (SimCLR appendix B.1, BYOL sec.
3.3, and common practice since Goyal et al. 2017): the rule is "decay only tensors with
more than one dimension". LARS skips its trust ratio for the same tensors.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups of trainable parameters: matrices and kernels decayed, BN and bias not."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True},
    ]


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017), as SimCLR and BYOL use it.

    Per tensor: update = g + wd * w, scaled by trust = eta * ||w|| / ||update|| (1 where
    either norm is 0), then SGD momentum. Groups with `lars_exclude` (BN, bias) get plain
    SGD momentum, as in SimCLR's and BYOL's implementations. eta = 0.001 (the paper's).
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 1e-3):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad.clone()
                if not group["lars_exclude"]:
                    w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    trust = torch.where((w_norm > 0) & (u_norm > 0), group["eta"] * w_norm / u_norm, torch.ones_like(w_norm))
                    update.mul_(trust)
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = update
                else:
                    buf.mul_(group["momentum"]).add_(update)
                p.add_(buf, alpha=-group["lr"])
        return loss


# A classifier fit's lr is given in SGD's units (the pipeline's grids, Budget.lr); a network that asks for AdamW
# trains at this share of it: the fine-tuning grid 0.003-0.03 becomes AdamW's 3e-4-3e-3 around its usual 1e-3
# (Kingma & Ba 2015), and the methods' BASE_LR keep the same ratio (SimCLR: SGD 0.06 / 256, AdamW 1e-3).
LR_PER_SGD = {"sgd": 1.0, "adamw": 0.1}


def asked_optimizer(module_class: type | None) -> str | None:
    """The optimizer a module class names in its class attribute `optimizer` (the hashed n-gram bag: adamw,
    contrastive.code.encoders.TokenBag), else None."""
    wanted = getattr(module_class, "optimizer", None)
    return wanted if isinstance(wanted, str) else None


def preferred_optimizer(model: nn.Module) -> str:
    """sgd, or the optimizer the model's modules ask for (asked_optimizer)."""
    wanted = {asked_optimizer(type(m)) for m in model.modules()} - {None}
    if len(wanted) > 1:
        raise ValueError(f"the model's modules ask for different optimizers: {sorted(wanted)}")
    return wanted.pop() if wanted else "sgd"


def adamw(groups: list[dict], lr: float) -> torch.optim.AdamW:
    """AdamW with its fused kernel where this torch has one for the parameters' device (CPU since torch 2.4): one
    step of the code bag (its 16.9M-parameter table updated densely) took 0.70x the time of the default foreach
    update on 2 CPU cores (benchmarks/results/bag_optimizer_step.json); the update is the same."""
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr)


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float, momentum: float = 0.9):
    groups = param_groups(model, weight_decay)
    if name == "sgd":
        for g in groups:
            g.pop("lars_exclude", None)
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        for g in groups:
            g.pop("lars_exclude", None)
        return adamw(groups, lr)
    raise ValueError(f"unknown optimizer {name}")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the peak lr: linear warmup from 0, then cosine decay to 0 (SimCLR appendix B.1)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer, total_steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, total_steps, warmup_steps))
