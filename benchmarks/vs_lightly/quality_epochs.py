"""Part 2, the `quality-epochs` job: 10k training images, ResNet-18 (3x3 stride-1 stem, max-pool kept) for both
libraries, 5 epochs, SGD lr 0.06 x batch/256, momentum 0.9, wd 5e-4, cosine; weighted kNN on the 10k test
images. Equal epochs, equal network, equal optimizer settings: what differs is each library's method code,
heads and augmentation.

The max-pool network is backbones.resnet18_stem3_maxpool: lightly's side trains it directly, ours trains our
resnet18 (CIFAR stem) with the KeepMaxPool callback; the package's backbone registry is never written to."""

from __future__ import annotations

from pathlib import Path

import torch

from .backbones import MAXPOOL_BACKBONE, resnet18_stem3_maxpool
from .common import KNN_K, KNN_T, fmt, knn, print_quality, quality_row, say
from .data import class_subset, ensure_cifar, load_ours
from .lightly_loop import run_lightly
from .lightly_models import lightly_encoder
from .ours import run_ours


def cmd_quality_epochs(args, results):
    """Part 2: equal epochs, equal network (3x3 stem + max-pool), equal optimizer settings."""
    root = class_subset(ensure_cifar(Path(args.data_root), args.archive), args.per_class, args.test_per_class)
    data, decode_s, n = load_ours(f"folder:{root}")
    say(f"ours: decoded {n} JPEGs ({len(data.train)} train, {len(data.test)} test) in {decode_s:.1f} s")
    results.add(part="decode", spec=f"folder:{root}", images=n, seconds=decode_s, images_per_s=n / decode_s)
    torch.manual_seed(0)
    floor = {"resnet18 3x3 stem + max-pool": knn(resnet18_stem3_maxpool()[0], data)}
    results.add(part="quality_epochs_floor", knn_top1=next(iter(floor.values())), backbone=MAXPOOL_BACKBONE,
                train_images=len(data.train), test_images=len(data.test))
    lr = 0.06 * args.batch / 256
    rows = []
    for method in args.methods.split(","):
        r = run_ours(method, data, batch=args.batch, epochs=args.epochs, maxpool=True, lr=0.06)
        row = quality_row("contrastive", method, r, knn(r["model"].encoder, data), args.batch,
                          {"epochs": args.epochs, "precision": r["precision"], "lr": r["config"].lr_scaled,
                           "warmup_epochs": r["config"].warmup_epochs, "loss_last_epoch": r["loss_last_epoch"]})
        del r
        results.add(part="quality_epochs", batch=args.batch, backbone=MAXPOOL_BACKBONE, **row)
        rows.append(row)
        say(f"  {method} ours: kNN {row['knn_top1']:.4f}, {fmt(row['pairs_per_s'])} pairs/s")
        r = run_lightly(method, root / "train", arch="maxpool", workers=args.lightly_workers, batch=args.batch,
                        precision=args.lightly_precision, lr=lr, epochs=args.epochs)
        row = quality_row("lightly", method, r, knn(lightly_encoder(r["model"]), data), args.batch,
                          {"epochs": args.epochs, "precision": args.lightly_precision, "lr": lr,
                           "workers": args.lightly_workers, "loss_last": r["loss_last"]})
        del r
        results.add(part="quality_epochs", batch=args.batch, backbone=MAXPOOL_BACKBONE, **row)
        rows.append(row)
        say(f"  {method} lightly: kNN {row['knn_top1']:.4f}, {fmt(row['pairs_per_s'])} pairs/s")
    print_quality(f"Quality at {args.epochs} epochs on {len(data.train)} images, ResNet-18 3x3 stem + max-pool, "
                  f"batch {args.batch}, SGD lr {lr:g}, kNN k={KNN_K} T={KNN_T} on {len(data.test)} test images",
                  rows, floor)
