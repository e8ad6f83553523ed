"""Batch norm across processes, or split within one.

- SplitBatchNorm2d: on one process, normalise each of `splits` groups of the batch on its
  own, as `splits` GPUs with ordinary BN would (the MoCo CIFAR demo's trick for
  simulating the paper's 8-GPU BN and its shuffling on one GPU).
- convert_sync_bn: the opposite, one BN over the batches of every process (SimCLR's
  "global BN", sec. B.1), with PyTorch's SyncBatchNorm.

Both keep BatchNorm's parameter and buffer names, so a state dict saved from either
loads into the plain backbone that evaluation builds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from contrastive import distributed as dist
from contrastive.errors import ContrastiveError


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, in training, normalises `splits` contiguous groups of the batch separately.

    Input (N, C, H, W) with N divisible by `splits`: rows [g * N/S, (g + 1) * N/S) form
    group g and are normalised with their own mean and variance (and the shared weight and
    bias). The running statistics move towards the mean over groups of the group
    statistics. In eval mode this is BatchNorm2d with the running statistics.
    """

    def __init__(self, num_features: int, splits: int, **kwargs):
        super().__init__(num_features, **kwargs)
        if splits < 1:
            raise ValueError(f"SplitBatchNorm2d: splits must be at least 1, got {splits}")
        self.splits = splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.splits == 1:
            return super().forward(x)
        self._check_input_dim(x)
        n, c, h, w = x.shape
        s = self.splits
        if n % s:
            raise ValueError(f"SplitBatchNorm2d: a batch of {n} does not split into {s} equal groups")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative average, as BatchNorm
                factor = 1.0 / float(self.num_batches_tracked)
        # Put group g in channel block g: (N, C, H, W) -> (N/S, S*C, H, W), one BN over S*C channels.
        grouped = x.view(s, n // s, c, h, w).transpose(0, 1).reshape(n // s, s * c, h, w)
        running_mean = self.running_mean.repeat(s) if self.track_running_stats else None  # (S*C,)
        running_var = self.running_var.repeat(s) if self.track_running_stats else None
        weight = self.weight.repeat(s) if self.affine else None
        bias = self.bias.repeat(s) if self.affine else None
        out = F.batch_norm(grouped, running_mean, running_var, weight, bias, True, factor, self.eps)
        if self.track_running_stats:
            with torch.no_grad():
                self.running_mean.copy_(running_mean.view(s, c).mean(0))
                self.running_var.copy_(running_var.view(s, c).mean(0))
        return out.view(n // s, s, c, h, w).transpose(0, 1).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, splits={self.splits}"


def convert_split_bn(module: nn.Module, splits: int) -> nn.Module:
    """Replace every BatchNorm2d in `module` by a SplitBatchNorm2d with the same weights and statistics.

    Works in place on the children and returns the module (or the replacement, when
    `module` itself is a BatchNorm2d). splits=1 returns `module` unchanged.
    """
    if splits == 1:
        return module
    if isinstance(module, nn.BatchNorm2d):
        split = SplitBatchNorm2d(module.num_features, splits, eps=module.eps, momentum=module.momentum,
                                 affine=module.affine, track_running_stats=module.track_running_stats)
        split = split.to(device=_device_of(module), dtype=_dtype_of(module))
        split.load_state_dict(module.state_dict())
        split.train(module.training)
        if module.affine:
            split.weight.requires_grad_(module.weight.requires_grad)
            split.bias.requires_grad_(module.bias.requires_grad)
        return split
    for name, child in module.named_children():
        new = convert_split_bn(child, splits)
        if new is not child:
            setattr(module, name, new)
    return module


def _device_of(module: nn.Module) -> torch.device:
    tensor = next(module.parameters(), None)
    tensor = tensor if tensor is not None else next(module.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _dtype_of(module: nn.Module) -> torch.dtype:
    tensor = next(module.parameters(), None)
    if tensor is None:
        tensor = next((b for b in module.buffers() if b.is_floating_point()), None)
    return tensor.dtype if tensor is not None else torch.get_default_dtype()


def convert_sync_bn(module: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """Every BatchNorm becomes a SyncBatchNorm over all processes (SimCLR's global BN).

    Call before wrapping in DistributedDataParallel. Without a process group (one
    process) the module is returned unchanged: its BN already sees the whole batch.
    PyTorch's SyncBatchNorm trains only on GPUs; passing the run's `device` turns a CPU
    run into a clear error here instead of one at the first step.
    """
    if dist.world_size() == 1:
        return module
    if device is not None and torch.device(device).type == "cpu":
        raise ContrastiveError("--sync-bn needs GPUs: PyTorch's SyncBatchNorm does not train on the CPU; "
                               "drop --sync-bn (each process then normalises its own batch)")
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)
