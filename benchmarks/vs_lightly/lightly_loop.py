"""lightly's side: its recipe in a plain PyTorch loop (lightly's README style), LightlyDataset + DataLoader with
lightly's per-image transforms, every batch request timestamped as our side's BatchClock does."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from .common import durations
from .lightly_models import build_lightly, lightly_transform


def run_lightly(method: str, train_dir: Path, *, arch: str, workers: int, batch: int, precision: str,
                lr: float, steps: int | None = None, epochs: int | None = None, seed: int = 0) -> dict:
    """Train with lightly's recipe; exactly one of steps (cosine over the steps, for fixed budgets) or epochs
    (CosineAnnealingLR(epochs) stepped per epoch, as lightly's script). Every batch request is timestamped."""
    from lightly.data import LightlyDataset

    start = time.perf_counter()  # wall time from here, as pretrain()'s includes building the model
    model = build_lightly(method, arch, seed)
    model.train()
    optimizer = torch.optim.SGD(model.trainable(), lr=lr, momentum=0.9, weight_decay=5e-4)
    t = time.perf_counter()
    dataset = LightlyDataset(input_dir=str(train_dir), transform=lightly_transform(method))
    index_seconds = time.perf_counter() - t
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True,
                                         num_workers=workers, generator=generator)
    per_epoch = len(loader)
    if per_epoch == 0:
        sys.exit(f"{train_dir} has {len(dataset)} images, fewer than the batch of {batch}")
    total = steps if steps is not None else epochs * per_epoch
    model.total_steps = total  # the length of DINO's momentum schedule (the other models do not read it)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total if steps is not None else epochs)
    clock, losses = train_steps(model, loader, optimizer, scheduler, total, per_step=steps is not None,
                                bf16=precision == "bf16")
    wall = time.perf_counter() - start
    return {"model": model, "durations": durations(clock), "wall": wall, "steps": len(losses), "per_epoch": per_epoch,
            "index_seconds": index_seconds, "loss_first": losses[0], "loss_last": losses[-1]}


def train_steps(model, loader, optimizer, scheduler, total: int, *, per_step: bool,
                bf16: bool) -> tuple[list[list[float]], list[float]]:
    """`total` steps over as many passes of `loader` as they take; the schedule steps per step (per_step) or
    per epoch. Returns one list of batch-request times per epoch, and the loss of every step."""
    clock: list[list[float]] = []
    losses = []
    done = 0
    while done < total:
        stamps: list[float] = []
        clock.append(stamps)
        it = iter(loader)
        while done < total:
            stamps.append(time.perf_counter())
            try:
                views, _, _ = next(it)  # two views, or 2 global + 6 local crops (MULTICROP)
            except StopIteration:
                break
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model.training_loss(*views)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            done += 1
            if per_step:
                scheduler.step()
        else:
            stamps.append(time.perf_counter())  # the budget ended inside the epoch: close its last step
        del it
        if not per_step:
            scheduler.step()
    return clock, losses
