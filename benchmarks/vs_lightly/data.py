"""The images both libraries read, and the `prepare` job.

The CIFAR-10 JPEG archive unpacks to DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg; the 10k-image subset
of parts 2 and 2b is a folder of symlinks to the first --per-class files of each class, sorted by name (the
order both libraries list them in)."""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import time
from pathlib import Path

import torch

from contrastive.image.data import DataSplits, ImageSet, load_data

from .common import ARCHIVES, say


def ensure_cifar(root: Path, archive: str | None) -> Path:
    """root/train and root/test as ImageFolder JPEGs; unpacked from the archive when train/ is missing."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        return root
    candidates = [archive] if archive else list(ARCHIVES)
    found = next((a for a in candidates if a and os.path.exists(a)), None)
    if found is None:
        sys.exit(f"no CIFAR-10 JPEG archive found (tried {candidates}); pass --archive")
    say(f"unpacking {found} to {root} ...")
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(found) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(root, filter="data")
        else:
            tar.extractall(root)
    return root


def class_subset(root: Path, per_class: int | None, test_per_class: int | None = None) -> Path:
    """A folder next to `root` whose train/<class>/ holds symlinks to the first `per_class` files (sorted by
    name, the order both libraries list them in) of each class of root/train; test is a link to root/test
    (or, with test_per_class, symlinks to the first files of each test class: smoke runs only)."""
    if per_class is None and test_per_class is None:
        return root
    sub = root.parent / (f"{root.name}-first{per_class}" + (f"-test{test_per_class}" if test_per_class else ""))
    if (sub / ".complete").exists():
        return sub
    shutil.rmtree(sub, ignore_errors=True)
    for split, n in (("train", per_class), ("test", test_per_class)):
        if n is None:
            os.symlink(root / split, sub / split, target_is_directory=True)
            continue
        for cls in sorted(d.name for d in (root / split).iterdir() if d.is_dir() and not d.name.startswith(".")):
            files = sorted(f for f in os.listdir(root / split / cls) if f.lower().endswith((".jpg", ".jpeg", ".png")))
            (sub / split / cls).mkdir(parents=True)
            for f in files[:n]:
                os.symlink(root / split / cls / f, sub / split / cls / f)
    (sub / ".complete").write_text("")
    return sub


def load_ours(spec: str):
    """load_data with its decode timed: every JPEG decoded once into one uint8 tensor."""
    t = time.perf_counter()
    data = load_data(spec)
    seconds = time.perf_counter() - t
    n = len(data.train) + (len(data.test) if data.test is not None else 0)
    return data, seconds, n


def fake_cifar(n: int = 8) -> DataSplits:
    """A few random uint8 3x32x32 images shaped like CIFAR-10: enough to resolve a config without the data."""
    g = torch.Generator().manual_seed(0)
    split = ImageSet(images=torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                     labels=torch.arange(n) % 10)
    return DataSplits(name="cifar10:fake", train=split, test=split, num_classes=10, channels=3, image_size=32,
                      classes=[str(c) for c in range(10)])


def cmd_prepare(args, results):
    """Unpack the archive to --data-root (if train/ is missing) and build the subset folder."""
    root = ensure_cifar(Path(args.data_root), args.archive)
    sub = class_subset(root, args.per_class, args.test_per_class)
    say(f"CIFAR-10 JPEGs: {root} (train {sum(1 for _ in (root / 'train').rglob('*.jpg'))}, "
        f"test {sum(1 for _ in (root / 'test').rglob('*.jpg'))}); subset: {sub}")
