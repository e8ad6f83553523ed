"""Part 2b, the `quality-time` job: the same 10k images, each library trains N minutes with its standard recipe.

Each side's step time is measured first (calibration: --calibration-steps timed steps after 2), then it trains
a whole cosine schedule of as many steps as fit in the budget, so neither ends mid-schedule."""

from __future__ import annotations

from pathlib import Path

import torch

from contrastive.image import backbones as our_backbones

from .common import knn, print_quality, quality_row, say
from .data import class_subset, ensure_cifar, load_ours
from .lightly_loop import run_lightly
from .lightly_models import build_lightly, lightly_encoder
from .ours import run_ours

CALIBRATION_WARMUP = 2  # untimed steps before the calibration's timed ones


def budget_steps(durations: list[float], budget: float, timed: int) -> tuple[float, int]:
    """(seconds a step, the steps that fit in `budget`) from a calibration run's step times."""
    step_s = sum(durations[CALIBRATION_WARMUP:CALIBRATION_WARMUP + timed]) / timed
    return step_s, max(1, int(budget / step_s))


def ours_in_budget(method: str, data, budget: float, args) -> dict:
    cal = run_ours(method, data, batch=args.batch, steps=CALIBRATION_WARMUP + args.calibration_steps + 1)
    step_s, target = budget_steps(cal["durations"], budget, args.calibration_steps)
    per_epoch = cal["per_epoch"]
    del cal
    r = run_ours(method, data, batch=args.batch, steps=target)
    return quality_row("contrastive", method, r, knn(r["model"].encoder, data), args.batch,
                       {"epochs": target / per_epoch, "budget_s": budget, "calibrated_step_s": step_s,
                        "precision": r["precision"], "lr": r["config"].lr_scaled,
                        "backbone": r["config"].backbone, "cifar_stem": r["config"].data_options.cifar_stem})


def lightly_in_budget(method: str, train_dir: Path, data, budget: float, args) -> dict:
    lr = 0.06 * args.batch / 128  # lightly's lr_factor = batch_size / 128
    recipe = {"arch": "generator", "workers": args.lightly_workers, "batch": args.batch,
              "precision": args.lightly_precision, "lr": lr}
    cal = run_lightly(method, train_dir, **recipe, steps=CALIBRATION_WARMUP + args.calibration_steps)
    step_s, target = budget_steps(cal["durations"], budget, args.calibration_steps)
    per_epoch = cal["per_epoch"]
    del cal
    r = run_lightly(method, train_dir, **recipe, steps=target)
    return quality_row("lightly", method, r, knn(lightly_encoder(r["model"]), data), args.batch,
                       {"epochs": target / per_epoch, "budget_s": budget, "calibrated_step_s": step_s,
                        "precision": args.lightly_precision, "lr": lr, "workers": args.lightly_workers,
                        "backbone": "ResNetGenerator resnet-18"})


def keep(row: dict, library: str, rows: list, results, batch: int) -> None:
    results.add(part="quality_time", batch=batch, **row)
    rows.append(row)
    say(f"  {row['method']} {library}: {row['steps']} steps ({row['epochs']:.2f} epochs), kNN {row['knn_top1']:.4f}")


def cmd_quality_time(args, results):
    """Part 2b: equal wall-clock. Each side's step time is measured first (calibration), then it trains a
    whole cosine schedule of as many steps as fit in the budget, with its own standard recipe."""
    root = class_subset(ensure_cifar(Path(args.data_root), args.archive), args.per_class, args.test_per_class)
    data, decode_s, n = load_ours(f"folder:{root}")
    results.add(part="decode", spec=f"folder:{root}", images=n, seconds=decode_s, images_per_s=n / decode_s)
    budget = args.minutes * 60
    floor = {}
    for name, build in (("ours (torchvision resnet18, CIFAR stem)",
                         lambda: our_backbones.build_backbone("resnet18", 3, True)[0]),
                        ("lightly ResNetGenerator resnet-18",
                         lambda: lightly_encoder(build_lightly("simclr", "generator")))):
        torch.manual_seed(0)
        floor[name] = knn(build(), data)
    results.add(part="quality_time_floor", knn_top1=floor, train_images=len(data.train))
    rows = []
    for method in args.methods.split(","):
        ours = ours_in_budget(method, data, budget, args)
        keep(ours, "ours", rows, results, args.batch)
        theirs = lightly_in_budget(method, root / "train", data, budget, args)
        keep(theirs, "lightly", rows, results, args.batch)
    print_quality(f"Quality at equal wall-clock ({args.minutes:g} min of training each, standard recipes), "
                  f"{len(data.train)} images, batch {args.batch}", rows, floor)
