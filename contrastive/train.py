"""The one training loop, for every method and every modality.

`pretrain(cfg)` is five small steps: `setup` (data, resolved config, model, optimizer,
run folder), `restore` (from a checkpoint, on --resume), `run_epoch` (the batches of one
epoch through `take_step`), `save` (an atomic checkpoint) and `finish`. Around them sit
callbacks (`Callback`): the kNN monitor is one, and tests, benchmarks and fault injection
add their own instead of patching the module.

Determinism: the data order of an epoch and the augmentation of every batch derive from
(seed, epoch, batch) alone, and the global RNG is saved in every checkpoint, so a killed
run resumes where it stopped and ends bit for bit where it would have.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from contrastive import distributed as dist
from contrastive.batches import Views, batches
from contrastive.callbacks import Callback
from contrastive.checkpoint import checkpoint_name, latest_good_checkpoint, list_checkpoints, prune_checkpoints, save_atomic
from contrastive.config import PretrainConfig
from contrastive.device import pick_device, resolve_precision
from contrastive.errors import ContrastiveError
from contrastive.evaluate.knn import encoder_knn_accuracy
from contrastive.methods import build_method, view_spec
from contrastive.grouped import grouped_order, rank_share
from contrastive.modality import Reader, load_data, modality_of, reader_for
from contrastive.norm import convert_sync_bn
from contrastive.optim import build_optimizer, build_scheduler
from contrastive.run_state import (check_resumable, checkpoint_state, data_record, encoder_record, new_run_dir,
                                   prepare_run_dir, resume_dir, seed_everything, set_rng_state, write_config)
from contrastive.subsets import limit_items
from contrastive.train_log import MetricsLog

MAX_SKIPS_IN_A_ROW = 20  # --skip-nonfinite gives up after this many bad steps in a row: the weights are gone.


class KnnMonitor(Callback):
    """Weighted kNN top-1 of the encoder (k, T from cfg.knn): the run's training items as the bank,
    the test split as queries; at random init and every `cfg.knn.every` epochs."""

    def on_start(self, run: "Run") -> None:
        if not run.resumed:
            run.history["knn"]["0"] = self.measure(run)
            run.metrics.write(epoch=0, step=0, knn_top1=run.history["knn"]["0"])

    def on_epoch_end(self, run: "Run", epoch: int, record: dict) -> None:
        if (epoch + 1) % run.cfg.knn.every == 0:
            record["knn_top1"] = run.history["knn"][str(epoch + 1)] = self.measure(run)

    def on_end(self, run: "Run") -> None:
        if str(run.epoch) not in run.history["knn"]:  # the last epoch fell between two measurements
            run.history["knn"][str(run.epoch)] = self.measure(run)

    @staticmethod
    def measure(run: "Run") -> float:
        return encoder_knn_accuracy(run.model.encoder, run.train, run.data.test, run.data.num_classes, run.reader,
                                    run.device, run.cfg.knn.k, run.cfg.knn.temperature)


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


@dataclass
class Run:
    """Everything a pretraining run holds; the loop's steps read and advance it."""

    cfg: PretrainConfig  # resolved: never changed
    data: object
    train: object  # the training items after --train-limit
    reader: Reader
    device: torch.device
    model: nn.Module
    forward: nn.Module  # the model, wrapped in DDP under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: object
    views: Views
    run_dir: Path
    metrics: MetricsLog
    log: object
    callbacks: list
    encoder: dict  # what a classifier starts from (saved in every checkpoint)
    steps_per_epoch: int
    total_steps: int
    resumed: bool = False
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of epoch `epoch + 1` completed
    step: int = 0
    history: dict = field(default_factory=lambda: {"knn": {}})
    stats: dict = field(default_factory=lambda: new_epoch_stats())
    skipped: int = 0
    in_a_row: int = 0
    last_save: float = field(default_factory=time.time)
    started: float = field(default_factory=time.time)


def new_epoch_stats() -> dict:
    """What the epoch line reports, accumulated over the epoch (and saved with a mid-epoch checkpoint)."""
    return {"loss_sum": 0.0, "batches": 0, "seen": 0, "seconds": 0.0}


def epoch_seed(cfg: PretrainConfig, epoch: int) -> int:
    """Every random choice of an epoch (order, augmentations) derives from (seed, epoch)."""
    return cfg.seed * 100_003 + epoch


def batch_seed(cfg: PretrainConfig, epoch: int, batch: int) -> int:
    """The augmentation seed of one batch on this process: a resumed run redraws the same views."""
    return (epoch_seed(cfg, epoch) * 1_000_003 + batch) * 1_009 + dist.rank()


def epoch_indices(n: int, cfg: PretrainConfig, epoch: int, groups: list[str] | None = None) -> torch.Tensor:
    """This process's item indices for an epoch, in order: a DistributedSampler (shuffled, drop_last) seeded
    by the run's seed and set to the epoch. At world size 1 it is a plain seeded permutation.

    With `groups` (--batch-groups: each item's family) the families come in a random order, each shuffled
    inside, dealt to the processes in local batches (contrastive.grouped); the same guarantees: seeded by
    (seed, epoch), n // world items per process, none shared."""
    if groups is not None:
        order = grouped_order(groups, torch.Generator().manual_seed(epoch_seed(cfg, epoch)))
        return rank_share(order, dist.world_size(), dist.rank(), local_batch_size(cfg))
    sampler = DistributedSampler(range(n), num_replicas=dist.world_size(), rank=dist.rank(), shuffle=True,
                                 seed=epoch_seed(cfg, 0), drop_last=True)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


def batch_groups(cfg: PretrainConfig, data, train) -> list[str] | None:
    """Each training item's family when --batch-groups packs whole families into batches, else None."""
    if not cfg.batch_groups:
        return None
    modality = modality_of(data)
    groups = modality.batch_families(train)
    if groups is None:
        raise ContrastiveError(f"--batch-groups needs items that come in families, and {modality.kind} has none; "
                               f"drop --batch-groups")
    return groups


def local_batch_size(cfg: PretrainConfig) -> int:
    return cfg.batch_size // dist.world_size()


def restarted_with_checkpoints(cfg: PretrainConfig) -> bool:
    """torchrun --max-restarts restarted the workers (a process died): continue from the last checkpoint."""
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == 0:
        return False
    try:
        return bool(list_checkpoints(resume_dir(cfg)))
    except ContrastiveError:
        return False


# --- the steps ------------------------------------------------------------------------------

def setup(cfg: PretrainConfig, data=None, log=print, callbacks=()) -> Run:
    """Load the data, resolve the config once, build model, optimizer and schedule, claim the run folder."""
    process_device = dist.init_from_env()  # under torchrun: join the group; this process's GPU (or the CPU)
    watchers = []
    if cfg.tensorboard and dist.is_main():  # before anything is written: a missing package stops here
        from contrastive.tensorboard import TensorBoardLog

        watchers.append(TensorBoardLog())
    data = data or load_data(cfg.data, cfg.data_options)
    device = process_device or pick_device(cfg.device)
    resume = cfg.resume or restarted_with_checkpoints(cfg)
    folder = resume_dir(cfg) if resume else new_run_dir(cfg)
    cfg = cfg.resolve(data, world_size=dist.world_size(), precision=resolve_precision(cfg.precision, device),
                      out=str(folder), resume=resume)
    run_dir = prepare_run_dir(folder, cfg.resume, dist.is_main())
    seed_everything(cfg.seed)
    log = log if dist.is_main() else (lambda *_: None)

    reader = reader_for(data, cfg.data_options)
    model, feat_dim = build_model(cfg, reader)
    model = reader.handler.prepare_model(model.to(device), cfg.data_options)
    if cfg.sync_bn and dist.world_size() > 1:
        model = convert_sync_bn(model, device)
    forward = dist.data_parallel(model, device)  # DDP under torchrun (gradients averaged), else the model itself
    optimizer = build_optimizer(cfg.optimizer, model, cfg.lr_scaled, cfg.weight_decay, cfg.momentum)
    train = limit_items(data.train, cfg.train_limit)  # drawn once: the limit copies the items it keeps
    if len(train) < cfg.batch_size:
        raise ContrastiveError(f"the training set has {len(train)} {reader.handler.noun}, fewer than --batch-size "
                               f"{cfg.batch_size}; lower --batch-size")
    batch_groups(cfg, data, train)  # data without families is refused here, before the first epoch
    steps_per_epoch = (len(train) // dist.world_size()) // local_batch_size(cfg)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    scheduler = build_scheduler(optimizer, total_steps, int(round(cfg.warmup_epochs * steps_per_epoch)))
    views = reader.handler.pretrain_views(view_spec(cfg.method, cfg.method_options), train, reader.inputs,
                                          cfg.data_options)
    monitors = [KnnMonitor()] if cfg.knn.every > 0 and data.test is not None and train.has_labels else []
    monitors += watchers  # after the kNN monitor, so they see its number in the epoch record
    return Run(cfg, data, train, reader, device, model, forward, optimizer, scheduler, views, run_dir,
               MetricsLog(run_dir / "metrics.jsonl", enabled=dist.is_main()), log, monitors + list(callbacks),
               encoder_record(model, cfg, reader.inputs, feat_dim), steps_per_epoch, total_steps)


def build_model(cfg: PretrainConfig, reader: Reader) -> tuple[nn.Module, int]:
    """(the method around a fresh encoder, the encoder's width) for a resolved config."""
    encoder, feat_dim = reader.build_encoder(cfg.backbone)
    return build_method(cfg.method, cfg.method_options, encoder, feat_dim), feat_dim


def epoch_batches(run: Run, epoch: int, start: int = 0):
    """(views, labels) of one epoch on this process, from batch `start` on: order and views from (seed, epoch)."""
    cfg = run.cfg
    order = epoch_indices(len(run.train), cfg, epoch, batch_groups(cfg, run.data, run.train))
    return batches(run.train, run.views, order, local_batch_size(cfg), run.device,
                   epoch_seed=epoch_seed(cfg, epoch), batch_seed=lambda b: batch_seed(cfg, epoch, b), drop_last=True,
                   start=start, num_workers=cfg.num_workers)


def restore(run: Run) -> None:
    """--resume: model, optimizer, schedule, position, statistics and RNG from the newest good checkpoint."""
    found = latest_good_checkpoint(run.run_dir, warn=run.log)
    if found is None:
        raise ContrastiveError(f"--resume: no readable checkpoint in {run.run_dir}; start a new run without --resume")
    path, ckpt = found
    check_resumable(ckpt, run.cfg, run.encoder, path)
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.epoch, run.step, run.history = ckpt["epoch"], ckpt["step"], ckpt["history"]
    run.batch = ckpt.get("batch", 0)
    run.stats = ckpt.get("epoch_stats") or run.stats
    run.skipped = run.history.get("skipped_steps", 0)
    run.resumed = True
    set_rng_state(ckpt["rng"])
    where = f"epoch {run.epoch}" + (f" + {run.batch} batches" if run.batch else "")
    run.log(f"resuming {run.run_dir} from {path.name} ({where}, step {run.step})")


def nonfinite_message(loss: torch.Tensor, step: int, epoch: int, run_dir: Path, skipped: bool) -> str:
    what = f"loss became {loss.item()} at step {step} (epoch {epoch + 1})"
    if skipped:
        return (f"{what} {MAX_SKIPS_IN_A_ROW} steps in a row with --skip-nonfinite; the weights have diverged. "
                f"The last good checkpoint is kept in {run_dir}; resume it with a lower --lr or --precision fp32")
    return (f"{what}; the last good checkpoint is kept in {run_dir}; lower --lr, use --precision fp32, "
            f"or pass --skip-nonfinite to skip such steps")


def take_step(run: Run, views: list[torch.Tensor], epoch: int) -> tuple[float, bool]:
    """One optimizer step on one batch of views; (the loss over the global batch, whether it was finite).

    A non-finite loss stops the run, or with --skip-nonfinite skips the update (every process
    agrees, so DDP cannot deadlock); the schedule advances either way."""
    cfg = run.cfg
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        loss, extra = run.forward(views)
    run.optimizer.zero_grad(set_to_none=True)
    finite = dist.all_true(bool(torch.isfinite(loss)))
    if finite:
        loss.backward()
        run.optimizer.step()
        run.model.update_target(run.step / max(1, run.total_steps))
        run.in_a_row = 0
    elif cfg.skip_nonfinite and run.in_a_row + 1 < MAX_SKIPS_IN_A_ROW:
        run.skipped, run.in_a_row = run.skipped + 1, run.in_a_row + 1
        run.log(f"warning: skipped step {run.step} (epoch {epoch + 1}): loss {loss.item()}; "
                f"{run.skipped} skipped so far")
    else:
        raise ContrastiveError(nonfinite_message(loss, run.step, epoch, run.run_dir, cfg.skip_nonfinite))
    loss = dist.all_reduce_mean(loss)  # what is logged: the loss over the global batch
    lr = run.optimizer.param_groups[0]["lr"]
    with warnings.catch_warnings():  # a skipped first step makes torch warn about the call order
        warnings.simplefilter("ignore", UserWarning)
        run.scheduler.step()
    run.step += 1
    value = loss.item()
    run.stats["seen"] += views[0].shape[0] * dist.world_size()  # every process: the global rate in the log
    if finite:
        run.stats["loss_sum"] += value
        run.stats["batches"] += 1
    if run.step % cfg.log_every == 0:
        run.metrics.write(epoch=epoch + 1, step=run.step, loss=value, lr=lr, skipped_steps=run.skipped, **extra)
    for callback in run.callbacks:
        callback.on_step(run, value, finite)
    return value, finite


def checkpoint_due(run: Run) -> bool:
    """Inside an epoch: every --checkpoint-every steps, or when --checkpoint-minutes have passed."""
    cfg = run.cfg
    by_steps = cfg.checkpoint_every > 0 and run.step % cfg.checkpoint_every == 0
    return by_steps or (cfg.checkpoint_minutes > 0 and time.time() - run.last_save >= cfg.checkpoint_minutes * 60)


def save(run: Run, epoch_done: int, batch: int) -> None:
    """An atomic checkpoint of the run (rank 0 writes); the two newest are kept."""
    if dist.is_main():
        run.history["skipped_steps"] = run.skipped
        state = checkpoint_state(run.model, run.optimizer, run.scheduler, run.cfg, data=data_record(run.data),
                                 encoder=run.encoder, epoch=epoch_done, batch=batch, step=run.step,
                                 history=run.history, epoch_stats=run.stats)
        save_atomic(state, run.run_dir / checkpoint_name(epoch_done, run.step if batch else None))
        prune_checkpoints(run.run_dir)
    run.last_save = time.time()


def run_epoch(run: Run, epoch: int) -> None:
    """The batches of one epoch (from run.batch on when resuming inside it), then its line and checkpoint."""
    cfg, first = run.cfg, run.batch if epoch == run.epoch else 0
    if first == 0:
        torch.manual_seed(epoch_seed(cfg, epoch))
        run.stats = new_epoch_stats()
    run.model.train()
    produced = epoch_batches(run, epoch, first)
    for callback in run.callbacks:
        produced = callback.wrap_batches(run, epoch, produced)
    bar = tqdm(produced, initial=first, total=run.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
               leave=False, disable=None if dist.is_main() else True, file=sys.stderr)
    t0, seen0 = time.time(), run.stats["seen"]
    for batch, (views, _) in enumerate(bar, start=first):
        loss, _ = take_step(run, views, epoch)
        run.batch = batch + 1
        rate = (run.stats["seen"] - seen0) / max(time.time() - t0, 1e-9)
        bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rate:.0f}")
        if run.step >= run.total_steps:
            break
        if batch + 1 < run.steps_per_epoch and checkpoint_due(run):
            run.stats["seconds"] += time.time() - t0
            t0, seen0 = time.time(), run.stats["seen"]
            save(run, epoch, batch + 1)
    bar.close()
    run.stats["seconds"] += time.time() - t0
    dist.sync_buffers(run.model)  # BN statistics of rank 0 everywhere: one model for monitors and the checkpoint
    record = {"epoch_loss": run.stats["loss_sum"] / max(1, run.stats["batches"]),
              "epoch_seconds": run.stats["seconds"], "items_per_s": run.stats["seen"] / max(run.stats["seconds"], 1e-9)}
    for callback in run.callbacks:
        callback.on_epoch_end(run, epoch, record)
    run.metrics.write(epoch=epoch + 1, step=run.step, skipped_steps=run.skipped, **record)
    knn = f"kNN top-1 {record['knn_top1']:.4f}  " if "knn_top1" in record else ""
    run.log(f"epoch {epoch + 1}/{cfg.epochs}  loss {record['epoch_loss']:.4f}  {knn}{record['items_per_s']:.0f} "
            f"{run.reader.handler.noun}/s" + (f"  ({run.skipped} steps skipped)" if run.skipped else ""))
    run.epoch, run.batch = epoch + 1, 0
    save(run, epoch + 1, 0)


def describe(run: Run) -> None:
    cfg, world = run.cfg, dist.world_size()
    run.log(f"{cfg.method} | {cfg.backbone} | data {run.data.name}: {len(run.train)} {run.reader.handler.noun} | "
            f"global batch {cfg.batch_size} ({world} x {local_batch_size(cfg)}) | lr {cfg.lr_scaled:.4g} "
            f"({cfg.lr} x {cfg.batch_size}/256) | {cfg.epochs} epochs | {run.device} {cfg.precision}")
    if world > 1:
        note = cfg.method_options.distributed_note()
        run.log(f"{world} processes: lr scaled by the global batch; BN over "
                + ("the global batch (SyncBN)" if cfg.sync_bn else f"each process's batch of {local_batch_size(cfg)}")
                + (f"; {note}" if note else ""))
    run.log(f"run folder: {run.run_dir}")


def pretrain(cfg: PretrainConfig, data=None, log=print, callbacks=()) -> RunResult:
    """Train `cfg.method` without labels; returns the run folder, kNN before and after, and the model."""
    run = setup(cfg, data, log, callbacks)
    if run.cfg.resume:
        restore(run)
    elif dist.is_main():
        write_config(run.run_dir, run.cfg)
    for callback in run.callbacks:
        callback.on_start(run)
    describe(run)
    for epoch in range(run.epoch, run.cfg.epochs):
        if run.step >= run.total_steps:
            break
        run_epoch(run, epoch)
    for callback in run.callbacks:
        callback.on_end(run)
    knn = run.history["knn"]
    return RunResult(run.run_dir, run.cfg, knn.get("0"), knn.get(str(run.epoch)), run.step, time.time() - run.started, run.model,
                     run.skipped)
