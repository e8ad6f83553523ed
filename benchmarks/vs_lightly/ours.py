"""Our side: contrastive.train.pretrain as a user calls it, with a clock on every batch request.

The benchmark does not re-implement our loop: it passes callbacks (BatchClock to time the steps; for part 2
KeepMaxPool from backbones.py to train the max-pool ResNet-18) and reads what pretrain returns and writes."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from contrastive.config import KnnConfig, PretrainConfig
from contrastive.train import Callback

from .backbones import KeepMaxPool
from .common import CIFAR_READER, OURS_BACKBONE, durations
from .data import fake_cifar


class BatchClock(Callback):
    """Timestamps every batch request of contrastive.train.pretrain through the loop's wrap_batches hook,
    without changing what the epoch yields: `clock` gets one list of request times per epoch."""

    def __init__(self):
        self.clock: list[list[float]] = []

    def wrap_batches(self, run, epoch, batches):
        stamps: list[float] = []
        self.clock.append(stamps)

        def timed():
            it = iter(batches)
            while True:
                stamps.append(time.perf_counter())
                try:
                    item = next(it)
                except StopIteration:
                    return
                yield item

        return timed()


def run_ours(method: str, data, *, batch: int, precision: str = "auto", steps: int | None = None,
             epochs: int | None = None, backbone: str | None = None, maxpool: bool = False, lr: float | None = None,
             seed: int = 0) -> dict:
    """contrastive.train.pretrain with our defaults except what is passed; kNN monitoring off (the
    benchmark scores both libraries with one kNN afterwards), no checkpoints inside epochs.
    steps: stop after this many steps (the cosine schedule then ends there); epochs: whole epochs.
    maxpool: train backbones.resnet18_stem3_maxpool (our resnet18 with the CIFAR stem, max-pool put back)."""
    from contrastive.train import pretrain

    per_epoch = len(data.train) // batch
    if per_epoch == 0:
        sys.exit(f"{data.name} has {len(data.train)} training images, fewer than the batch of {batch}")
    if epochs is None:
        epochs = max(1, math.ceil(steps / per_epoch))
    out = Path(tempfile.mkdtemp(prefix=f"ours-{method}-", dir=os.environ.get("BENCH_TMP", "/tmp")))
    cfg = PretrainConfig(method=method, data=data.name, batch_size=batch, epochs=epochs, max_steps=steps,
                         backbone="resnet18" if maxpool else backbone or OURS_BACKBONE, lr=lr, precision=precision,
                         knn=KnnConfig(every=0), log_every=10 ** 9, checkpoint_minutes=0.0, out=str(out / "run"),
                         seed=seed)
    clock = BatchClock()
    try:
        t0 = time.perf_counter()
        result = pretrain(cfg, data=data, log=lambda *a, **k: None,
                          callbacks=[KeepMaxPool(), clock] if maxpool else [clock])
        wall = time.perf_counter() - t0
        with open(out / "run" / "metrics.jsonl") as f:
            metrics = [json.loads(line) for line in f]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    losses = [m["epoch_loss"] for m in metrics if "epoch_loss" in m]
    return {"model": result.model, "durations": durations(clock.clock), "wall": wall, "steps": result.steps,
            "per_epoch": per_epoch, "precision": result.config.precision, "config": result.config,
            "loss_last_epoch": losses[-1] if losses else None}


def our_model_for_flops(method: str, batch: int, backbone: str | None = None) -> nn.Module:
    """Our method as pretrain() builds it for 32 px CIFAR images at this batch (MoCo's BN splits follow the
    batch), from the config resolved on a stand-in for the data."""
    from contrastive.train import build_model

    cfg = PretrainConfig(method=method, batch_size=batch, backbone=backbone or OURS_BACKBONE).resolve(fake_cifar())
    torch.manual_seed(0)
    return build_model(cfg, CIFAR_READER)[0]
