"""The one training loop, for every method.

pretrain(cfg) loads the data, builds backbone + method, and trains with SGD / LARS /
AdamW under a linear-warmup cosine schedule, in fp32 or bf16 autocast. Each epoch it
logs a kNN monitor (when the data has labels) and writes an atomic checkpoint holding
the model, optimizer, scheduler, step, RNG states and the full resolved config.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from contrastive import distributed as dist
from contrastive.augment import method_views
from contrastive.batch_augment import batch_method_views
from contrastive.backbones import build_backbone
from contrastive.checkpoint import (checkpoint_name, latest_good_checkpoint, list_checkpoints, prune_checkpoints,
                                    save_atomic)
from contrastive.config import PretrainConfig
from contrastive.device import pick_device, resolve_precision
from contrastive.data import DataSplits, Transformed, limit_images, load_data
from contrastive.errors import ContrastiveError
from contrastive.evaluate.knn import encoder_knn_accuracy
from contrastive.methods import build_method
from contrastive.optim import build_optimizer, build_scheduler

CHECKPOINT_FORMAT = 1


@dataclass
class RunResult:
    run_dir: Path
    config: PretrainConfig
    knn_random_init: float | None
    knn_final: float | None
    steps: int
    seconds: float
    model: nn.Module


def build_model(cfg: PretrainConfig, channels: int) -> nn.Module:
    """Backbone + method for a resolved config."""
    encoder, feat_dim = build_backbone(cfg.backbone, channels, cfg.cifar_stem)
    return build_method(cfg, encoder, feat_dim)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(cfg: PretrainConfig, epoch: int) -> int:
    """Every random choice of an epoch (order, augmentations) derives from (seed, epoch):
    a run resumed at an epoch boundary replays exactly what an uninterrupted run does."""
    return cfg.seed * 100_003 + epoch


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def new_run_dir(cfg: PretrainConfig) -> Path:
    if cfg.out:
        return Path(cfg.out)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.method}-{stamp}"


def resume_dir(cfg: PretrainConfig) -> Path:
    """--resume continues --out, or the newest runs/<method>-* folder that holds a checkpoint."""
    if cfg.out:
        return Path(cfg.out)
    candidates = sorted((p for p in Path("runs").glob(f"{cfg.method}-*") if list_checkpoints(p)), reverse=True)
    if not candidates:
        raise ContrastiveError(f"--resume found no runs/{cfg.method}-* folder with a checkpoint; pass --out RUN_DIR")
    return candidates[0]


def prepare_run_dir(path: Path, resume: bool) -> Path:
    if not resume and list_checkpoints(path):
        raise ContrastiveError(f"run folder {path} already holds checkpoints; pass --resume to continue it or another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ContrastiveError(f"cannot write to run folder {path} ({e.strerror}); choose another --out") from None
    return path


class MetricsLog:
    """Appends one JSON object a line to RUN_DIR/metrics.jsonl (rank 0 only)."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, **record) -> None:
        if dist.is_main():
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def knn_monitor(model: nn.Module, data: DataSplits, cfg: PretrainConfig, device: torch.device) -> float | None:
    if data.test is None or not data.train.has_labels:
        return None
    return encoder_knn_accuracy(model.encoder, training_images(data, cfg), data.test, data.num_classes,
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


def tensor_batches(train, cfg: PretrainConfig, epoch: int, device: torch.device):
    """Views for one epoch from in-memory uint8 images: shuffle, slice, move, augment on the device."""
    augs = batch_method_views(cfg.method, cfg.image_size, train.images.shape[1], cfg.color_strength)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch_seed(cfg, epoch)))
    aug_rng = torch.Generator(device).manual_seed(epoch_seed(cfg, epoch))
    for b in range(len(train) // cfg.batch_size):  # drop the last partial batch, as the loader does
        idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
        images = train.images[idx].to(device, non_blocking=True)  # uint8 (B, C, H, W)
        yield [aug(images, aug_rng) for aug in augs]


def loader_batches(train, cfg: PretrainConfig, epoch: int, device: torch.device):
    """Views for one epoch through a DataLoader and per-image torchvision v2 transforms."""
    views = method_views(cfg.method, cfg.image_size, train.channels, cfg.color_strength)
    generator = torch.Generator().manual_seed(epoch_seed(cfg, epoch))
    loader = DataLoader(Transformed(train, views), batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                        num_workers=cfg.num_workers, generator=generator, pin_memory=device.type == "cuda")
    for views, _ in loader:
        yield [v.to(device, non_blocking=True) for v in views]


def epoch_batches(data: DataSplits, cfg: PretrainConfig, epoch: int, device: torch.device):
    train = training_images(data, cfg)
    if uses_batch_augment(train, cfg):
        return tensor_batches(train, cfg, epoch, device)
    return loader_batches(train, cfg, epoch, device)


def checkpoint_state(model, optimizer, scheduler, cfg: PretrainConfig, data: DataSplits, epoch: int, step: int,
                     history: dict) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "config": cfg.to_dict(),
        "data": {"name": data.name, "channels": data.channels, "image_size": cfg.image_size,
                 "num_classes": data.num_classes, "classes": list(data.classes)},
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,  # epochs completed
        "step": step,
        "rng": rng_state(),
        "history": history,
    }


def check_compatible(ckpt: dict, cfg: PretrainConfig, path: Path) -> None:
    saved = ckpt["config"]
    for key in ("method", "backbone"):
        if saved.get(key) != getattr(cfg, key):
            raise ContrastiveError(
                f"checkpoint {path} was trained with {key} '{saved.get(key)}', not '{getattr(cfg, key)}'; "
                f"pass --{key} {saved.get(key)} or start a new run with another --out"
            )


def pretrain(cfg: PretrainConfig, data: DataSplits | None = None, log=print) -> RunResult:
    """Train `cfg.method` without labels; returns the run folder, kNN before and after, and the model."""
    data = data or load_data(cfg.data, seed=cfg.seed)
    cfg = cfg.resolve(image_size=data.image_size, embedded=data.name == "mnist")
    device = pick_device(cfg.device)
    cfg.precision = resolve_precision(cfg.precision, device)
    run_dir = prepare_run_dir(resume_dir(cfg) if cfg.resume else new_run_dir(cfg), cfg.resume)
    cfg.out = str(run_dir)
    seed_everything(cfg.seed)

    model = build_model(cfg, data.channels).to(device)
    optimizer = build_optimizer(cfg.optimizer, model, cfg.lr_scaled, cfg.weight_decay, cfg.momentum)
    n_train = len(training_images(data, cfg))
    if n_train < cfg.batch_size:
        raise ContrastiveError(
            f"the training set has {n_train} images, fewer than --batch-size {cfg.batch_size}; lower --batch-size"
        )
    steps_per_epoch = n_train // cfg.batch_size
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    scheduler = build_scheduler(optimizer, total_steps, int(round(cfg.warmup_epochs * steps_per_epoch)))
    metrics = MetricsLog(run_dir / "metrics.jsonl")

    start_epoch, step, history = 0, 0, {"knn": {}}
    if cfg.resume:
        found = latest_good_checkpoint(run_dir, warn=log)
        if found is None:
            raise ContrastiveError(f"--resume: no readable checkpoint in {run_dir}; start a new run without --resume")
        path, ckpt = found
        check_compatible(ckpt, cfg, path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, step, history = ckpt["epoch"], ckpt["step"], ckpt["history"]
        set_rng_state(ckpt["rng"])
        log(f"resuming {run_dir} from {path.name} (epoch {start_epoch}, step {step})")
    else:
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        knn0 = knn_monitor(model, data, cfg, device)
        if knn0 is not None:
            history["knn"]["0"] = knn0
            metrics.write(epoch=0, step=0, knn_top1=knn0)

    log(f"{cfg.method} | {cfg.backbone} | data {data.name}: {n_train} images | batch {cfg.batch_size} | "
        f"lr {cfg.lr_scaled:.4g} ({cfg.lr} x {cfg.batch_size}/256) | {cfg.epochs} epochs | {device} {cfg.precision}")
    log(f"run folder: {run_dir}")
    use_bf16 = cfg.precision == "bf16"
    start = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        if step >= total_steps:
            break
        torch.manual_seed(epoch_seed(cfg, epoch))
        model.train()
        bar = tqdm(epoch_batches(data, cfg, epoch, device), total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   leave=False, disable=None, file=sys.stderr)
        t0, seen, running, batches = time.time(), 0, 0.0, 0
        for views in bar:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss, extra = model(views)
            if not torch.isfinite(loss):
                raise ContrastiveError(
                    f"loss became {loss.item()} at step {step} (epoch {epoch + 1}); the last good checkpoint is kept "
                    f"in {run_dir}; lower --lr or use --precision fp32"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if hasattr(model, "update_target"):
                model.update_target(step / max(1, total_steps))
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            step += 1
            seen += views[0].shape[0]
            loss_value = loss.item()
            running += loss_value
            batches += 1
            rate = seen / max(time.time() - t0, 1e-9)
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}")
            if step % cfg.log_every == 0:
                metrics.write(epoch=epoch + 1, step=step, loss=loss_value, lr=lr, images_per_s=rate, **extra)
            if step >= total_steps:
                break
        bar.close()
        knn = knn_monitor(model, data, cfg, device) if cfg.knn_every and (epoch + 1) % cfg.knn_every == 0 else None
        epoch_loss = running / max(1, batches)
        if knn is not None:
            history["knn"][str(epoch + 1)] = knn
        metrics.write(epoch=epoch + 1, step=step, epoch_loss=epoch_loss, knn_top1=knn,
                      epoch_seconds=time.time() - t0, images_per_s=seen / max(time.time() - t0, 1e-9))
        log(f"epoch {epoch + 1}/{cfg.epochs}  loss {epoch_loss:.4f}  "
            + (f"kNN top-1 {knn:.4f}  " if knn is not None else "") + f"{seen / (time.time() - t0):.0f} img/s")
        if dist.is_main():
            save_atomic(checkpoint_state(model, optimizer, scheduler, cfg, data, epoch + 1, step, history),
                        run_dir / checkpoint_name(epoch + 1))
            prune_checkpoints(run_dir)

    last = str(epoch + 1) if cfg.epochs > start_epoch else str(start_epoch)
    knn_final = history["knn"].get(last)
    if knn_final is None:
        knn_final = knn_monitor(model, data, cfg, device)
    return RunResult(run_dir, cfg, history["knn"].get("0"), knn_final, step, time.time() - start, model)
