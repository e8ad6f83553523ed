"""The one training loop, for every method.

pretrain(cfg) loads the data, builds backbone + method, and trains with SGD / LARS /
AdamW under a linear-warmup cosine schedule, in fp32 or bf16 autocast. Each epoch it
logs a kNN monitor (when the data has labels) and writes an atomic checkpoint; inside an
epoch it also checkpoints every `checkpoint_every` steps or `checkpoint_minutes`, so a
killed run resumes where it stopped and ends bit for bit where it would have.

Determinism: the data order of an epoch and the augmentation of every batch derive from
(seed, epoch, batch) alone, and the global RNG is saved in every checkpoint.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from contrastive import distributed as dist
from contrastive.augment import method_views
from contrastive.backbones import build_backbone
from contrastive.batch_augment import batch_method_views
from contrastive.checkpoint import (checkpoint_name, latest_good_checkpoint, list_checkpoints, prune_checkpoints,
                                    save_atomic)
from contrastive.config import PretrainConfig
from contrastive.data import DataSplits, Transformed, limit_images, load_data
from contrastive.device import pick_device, resolve_precision
from contrastive.errors import ContrastiveError
from contrastive.evaluate.knn import encoder_knn_accuracy
from contrastive.methods import build_method
from contrastive.norm import convert_sync_bn
from contrastive.optim import build_optimizer, build_scheduler
from contrastive.run_state import (check_resumable, checkpoint_state, new_run_dir, prepare_run_dir, resume_dir,
                                   seed_everything, set_rng_state, write_config)
from contrastive.train_log import MetricsLog

MAX_SKIPS_IN_A_ROW = 20  # --skip-nonfinite gives up after this many bad steps in a row: the weights are gone.


@dataclass
class RunResult:
    run_dir: Path
    config: PretrainConfig
    knn_random_init: float | None
    knn_final: float | None
    steps: int
    seconds: float
    model: nn.Module
    skipped_steps: int = 0


def build_model(cfg: PretrainConfig, channels: int) -> nn.Module:
    """Backbone + method for a resolved config."""
    encoder, feat_dim = build_backbone(cfg.backbone, channels, cfg.cifar_stem)
    return build_method(cfg, encoder, feat_dim)


def epoch_seed(cfg: PretrainConfig, epoch: int) -> int:
    """Every random choice of an epoch (order, augmentations) derives from (seed, epoch)."""
    return cfg.seed * 100_003 + epoch


def batch_seed(cfg: PretrainConfig, epoch: int, batch: int) -> int:
    """The augmentation seed of one batch on this process: a resumed run redraws the same views."""
    return (epoch_seed(cfg, epoch) * 1_000_003 + batch) * 1_009 + dist.rank()


def knn_monitor(model: nn.Module, train, data: DataSplits, cfg: PretrainConfig, device: torch.device) -> float | None:
    """kNN top-1 with the run's training images (`train`, after --train-limit) as the bank."""
    if data.test is None or not train.has_labels:
        return None
    return encoder_knn_accuracy(model.encoder, train, data.test, data.num_classes,
                                cfg.image_size, data.channels, device, cfg.knn_k, cfg.knn_temperature)


def training_images(data: DataSplits, cfg: PretrainConfig):
    return limit_images(data.train, cfg.train_limit)


def uses_batch_augment(train, cfg: PretrainConfig) -> bool:
    """The fast path (whole batches augmented as tensors) needs the images decoded in memory."""
    if cfg.augment == "auto":
        return train.images is not None
    if cfg.augment == "batch" and train.images is None:
        raise ContrastiveError("--augment batch needs images of one size decoded in memory; this folder is read "
                               "file by file (mixed sizes or too many files); use --augment per-image")
    return cfg.augment == "batch"


def epoch_indices(n: int, cfg: PretrainConfig, epoch: int) -> torch.Tensor:
    """This process's image indices for an epoch, in order: a DistributedSampler (shuffled, drop_last) seeded
    by the run's seed and set to the epoch. At world size 1 it is a plain seeded permutation."""
    sampler = DistributedSampler(range(n), num_replicas=dist.world_size(), rank=dist.rank(), shuffle=True,
                                 seed=epoch_seed(cfg, 0), drop_last=True)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


def local_batch_size(cfg: PretrainConfig) -> int:
    return cfg.batch_size // dist.world_size()


def tensor_batches(train, cfg: PretrainConfig, epoch: int, device: torch.device, start: int = 0):
    """Views for one epoch from in-memory uint8 images: slice, move, augment on the device."""
    augs = batch_method_views(cfg.method, cfg.image_size, train.images.shape[1], cfg.color_strength)
    order, b_size = epoch_indices(len(train), cfg, epoch), local_batch_size(cfg)
    aug_rng = torch.Generator(device)
    for b in range(start, len(order) // b_size):  # drop the last partial batch, as the loader does
        idx = order[b * b_size:(b + 1) * b_size]
        images = train.images[idx].to(device, non_blocking=True)  # uint8 (B, C, H, W)
        aug_rng.manual_seed(batch_seed(cfg, epoch, b))
        yield [in_layout(aug(images, aug_rng), cfg) for aug in augs]


def loader_batches(train, cfg: PretrainConfig, epoch: int, device: torch.device, start: int = 0):
    """Views for one epoch through a DataLoader and per-image torchvision v2 transforms."""
    views = method_views(cfg.method, cfg.image_size, train.channels, cfg.color_strength)
    order, b_size = epoch_indices(len(train), cfg, epoch), local_batch_size(cfg)
    order = order[start * b_size:(len(order) // b_size) * b_size].tolist()
    loader = DataLoader(Transformed(train, views, seed=epoch_seed(cfg, epoch)), batch_size=b_size, sampler=order,
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda")
    for views, _ in loader:
        yield [in_layout(v.to(device, non_blocking=True), cfg) for v in views]


def in_layout(x: torch.Tensor, cfg: PretrainConfig) -> torch.Tensor:
    """The views in the memory layout of the model (channels-last by default)."""
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


def epoch_batches(train, cfg: PretrainConfig, epoch: int, device: torch.device, start: int = 0):
    """Views for one epoch of the run's training images, from batch `start` on."""
    if uses_batch_augment(train, cfg):
        return tensor_batches(train, cfg, epoch, device, start)
    return loader_batches(train, cfg, epoch, device, start)


def restarted_with_checkpoints(cfg: PretrainConfig) -> bool:
    """torchrun --max-restarts restarted the workers (a process died): continue from the last checkpoint."""
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == 0:
        return False
    try:
        return bool(list_checkpoints(resume_dir(cfg)))
    except ContrastiveError:
        return False


def nonfinite_message(loss: torch.Tensor, step: int, epoch: int, run_dir: Path, skipped: bool) -> str:
    what = f"loss became {loss.item()} at step {step} (epoch {epoch + 1})"
    if skipped:
        return (f"{what} {MAX_SKIPS_IN_A_ROW} steps in a row with --skip-nonfinite; the weights have diverged. "
                f"The last good checkpoint is kept in {run_dir}; resume it with a lower --lr or --precision fp32")
    return (f"{what}; the last good checkpoint is kept in {run_dir}; lower --lr, use --precision fp32, "
            f"or pass --skip-nonfinite to skip such steps")


def new_epoch_stats() -> dict:
    """What the epoch line reports, accumulated over the epoch (and saved with a mid-epoch checkpoint)."""
    return {"loss_sum": 0.0, "batches": 0, "seen": 0, "seconds": 0.0}


class Checkpointer:
    """Decides when to write a checkpoint inside an epoch (every N steps or every M minutes)."""

    def __init__(self, cfg: PretrainConfig):
        self.every, self.seconds = cfg.checkpoint_every, cfg.checkpoint_minutes * 60
        self.last = time.time()

    def due(self, step: int) -> bool:
        by_steps = self.every > 0 and step % self.every == 0
        return by_steps or (self.seconds > 0 and time.time() - self.last >= self.seconds)

    def saved(self) -> None:
        self.last = time.time()


def pretrain(cfg: PretrainConfig, data: DataSplits | None = None, log=print) -> RunResult:
    """Train `cfg.method` without labels; returns the run folder, kNN before and after, and the model."""
    process_device = dist.init_from_env()  # under torchrun: join the group; this process's GPU (or the CPU)
    data = data or load_data(cfg.data, seed=cfg.seed)
    cfg = cfg.resolve(image_size=data.image_size, embedded=data.name == "mnist", world_size=dist.world_size())
    device = process_device or pick_device(cfg.device)
    cfg.precision = resolve_precision(cfg.precision, device)
    cfg.resume = cfg.resume or restarted_with_checkpoints(cfg)
    run_dir = prepare_run_dir(resume_dir(cfg) if cfg.resume else new_run_dir(cfg), cfg.resume, dist.is_main())
    cfg.out = str(run_dir)
    seed_everything(cfg.seed)
    log = log if dist.is_main() else (lambda *_: None)

    model = build_model(cfg, data.channels).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.sync_bn and dist.world_size() > 1:
        model = convert_sync_bn(model, device)
    forward = dist.data_parallel(model, device)  # DDP under torchrun (gradients averaged), else the model itself
    optimizer = build_optimizer(cfg.optimizer, model, cfg.lr_scaled, cfg.weight_decay, cfg.momentum)
    train = training_images(data, cfg)  # drawn once: --train-limit copies the images it keeps
    n_train = len(train)
    if n_train < cfg.batch_size:
        raise ContrastiveError(
            f"the training set has {n_train} images, fewer than --batch-size {cfg.batch_size}; lower --batch-size"
        )
    steps_per_epoch = (n_train // dist.world_size()) // local_batch_size(cfg)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    scheduler = build_scheduler(optimizer, total_steps, int(round(cfg.warmup_epochs * steps_per_epoch)))
    metrics = MetricsLog(run_dir / "metrics.jsonl", enabled=dist.is_main())

    start_epoch, start_batch, step, history = 0, 0, 0, {"knn": {}}
    stats = new_epoch_stats()
    skipped_total = 0
    if cfg.resume:
        found = latest_good_checkpoint(run_dir, warn=log)
        if found is None:
            raise ContrastiveError(f"--resume: no readable checkpoint in {run_dir}; start a new run without --resume")
        path, ckpt = found
        check_resumable(ckpt, cfg, path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, step, history = ckpt["epoch"], ckpt["step"], ckpt["history"]
        start_batch = ckpt.get("batch", 0)
        stats = ckpt.get("epoch_stats") or stats
        skipped_total = history.get("skipped_steps", 0)
        set_rng_state(ckpt["rng"])
        where = f"epoch {start_epoch}" + (f" + {start_batch} batches" if start_batch else "")
        log(f"resuming {run_dir} from {path.name} ({where}, step {step})")
    else:
        if dist.is_main():
            write_config(run_dir, cfg)
        knn0 = knn_monitor(model, train, data, cfg, device)
        if knn0 is not None:
            history["knn"]["0"] = knn0
            metrics.write(epoch=0, step=0, knn_top1=knn0)

    log(f"{cfg.method} | {cfg.backbone} | data {data.name}: {n_train} images | global batch {cfg.batch_size} "
        f"({dist.world_size()} x {local_batch_size(cfg)}) | lr {cfg.lr_scaled:.4g} ({cfg.lr} x {cfg.batch_size}/256) | "
        f"{cfg.epochs} epochs | {device} {cfg.precision}")
    if dist.world_size() > 1:
        log(f"{dist.world_size()} processes: lr scaled by the global batch; BN over "
            + ("the global batch (SyncBN)" if cfg.sync_bn else f"each process's batch of {local_batch_size(cfg)}")
            + ("; MoCo keys on a batch shuffled across processes" if cfg.method == "moco" and cfg.shuffle_bn else "")
            + ("; SimCLR negatives from the global batch" if cfg.method == "simclr" and cfg.gather else ""))
    log(f"run folder: {run_dir}")
    use_bf16 = cfg.precision == "bf16"
    start = time.time()
    checkpointer = Checkpointer(cfg)

    def save(epoch_done: int, batch: int) -> None:
        if dist.is_main():
            history["skipped_steps"] = skipped_total
            save_atomic(checkpoint_state(model, optimizer, scheduler, cfg, data, epoch=epoch_done, batch=batch,
                                         step=step, history=history, epoch_stats=stats),
                        run_dir / checkpoint_name(epoch_done, step if batch else None))
            prune_checkpoints(run_dir)
        checkpointer.saved()

    epoch, in_a_row = start_epoch, 0
    for epoch in range(start_epoch, cfg.epochs):
        if step >= total_steps:
            break
        first = start_batch if epoch == start_epoch else 0
        if first == 0:
            torch.manual_seed(epoch_seed(cfg, epoch))
            stats = new_epoch_stats()
        model.train()
        bar = tqdm(epoch_batches(train, cfg, epoch, device, first), initial=first, total=steps_per_epoch,
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=None if dist.is_main() else True,
                   file=sys.stderr)
        t0, seen0 = time.time(), stats["seen"]
        for batch, views in enumerate(bar, start=first):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss, extra = forward(views)
            optimizer.zero_grad(set_to_none=True)
            finite = dist.all_true(bool(torch.isfinite(loss)))  # every process skips or steps together
            if finite:
                loss.backward()
                optimizer.step()
                if hasattr(model, "update_target"):
                    model.update_target(step / max(1, total_steps))
                in_a_row = 0
            elif cfg.skip_nonfinite and in_a_row + 1 < MAX_SKIPS_IN_A_ROW:
                skipped_total, in_a_row = skipped_total + 1, in_a_row + 1
                log(f"warning: skipped step {step} (epoch {epoch + 1}): loss {loss.item()}; {skipped_total} skipped so far")
            else:
                raise ContrastiveError(nonfinite_message(loss, step, epoch, run_dir, cfg.skip_nonfinite))
            loss = dist.all_reduce_mean(loss)  # what is logged: the loss over the global batch
            lr = optimizer.param_groups[0]["lr"]
            with warnings.catch_warnings():  # a skipped first step makes torch warn about the call order
                warnings.simplefilter("ignore", UserWarning)
                scheduler.step()
            step += 1
            stats["seen"] += views[0].shape[0]
            loss_value = loss.item()
            if finite:
                stats["loss_sum"] += loss_value
                stats["batches"] += 1
            rate = (stats["seen"] - seen0) / max(time.time() - t0, 1e-9)
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}")
            if step % cfg.log_every == 0:
                metrics.write(epoch=epoch + 1, step=step, loss=loss_value, lr=lr, images_per_s=rate,
                              skipped_steps=skipped_total, **extra)
            if step >= total_steps:
                break
            if batch + 1 < steps_per_epoch and checkpointer.due(step):
                stats["seconds"] += time.time() - t0
                t0, seen0 = time.time(), stats["seen"]
                save(epoch, batch + 1)
        bar.close()
        stats["seconds"] += time.time() - t0
        dist.sync_buffers(model)  # BN statistics of rank 0 everywhere: one model for kNN and the checkpoint
        knn = knn_monitor(model, train, data, cfg, device) if cfg.knn_every and (epoch + 1) % cfg.knn_every == 0 else None
        epoch_loss = stats["loss_sum"] / max(1, stats["batches"])
        if knn is not None:
            history["knn"][str(epoch + 1)] = knn
        speed = stats["seen"] / max(stats["seconds"], 1e-9)
        metrics.write(epoch=epoch + 1, step=step, epoch_loss=epoch_loss, knn_top1=knn, epoch_seconds=stats["seconds"],
                      images_per_s=speed, skipped_steps=skipped_total)
        log(f"epoch {epoch + 1}/{cfg.epochs}  loss {epoch_loss:.4f}  " + (f"kNN top-1 {knn:.4f}  " if knn is not None else "")
            + f"{speed:.0f} img/s" + (f"  ({skipped_total} steps skipped)" if skipped_total else ""))
        save(epoch + 1, 0)

    last = str(epoch + 1) if cfg.epochs > start_epoch else str(start_epoch)
    knn_final = history["knn"].get(last)
    if knn_final is None:
        knn_final = knn_monitor(model, train, data, cfg, device)
    return RunResult(run_dir, cfg, history["knn"].get("0"), knn_final, step, time.time() - start, model, skipped_total)
