"""What every job shares: the constants of the comparison, the results file (one JSON object a line, each
carrying the machine it ran on), the kNN score both libraries are judged by, and per-step timing."""

from __future__ import annotations

import itertools
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch
from torch import nn

from contrastive.evaluate.knn import encoder_knn_accuracy
from contrastive.modality import Reader

from . import REPO


METHODS = ("simclr", "moco", "byol")
# Also comparable (--methods): the methods lightly has too (issue 15). DINO and SwAV take multi-crop views.
MORE_METHODS = ("simsiam", "barlow_twins", "vicreg", "dino", "swav")
MULTICROP = ("dino", "swav")
ARCHIVES = ("/work/shared/data/cifar10-jpg.tar.gz", str(REPO.parent / "shared/data/cifar10-jpg.tar.gz"),
            str(REPO / ".data/cifar10-jpg.tar.gz"))
DEFAULT_RESULTS = REPO / "benchmarks/results/lightly_compare.jsonl"
LIGHTLY_SOURCE = "lightly-ai/lightly docs/source/getting_started/benchmarks/cifar10_benchmark.py"
KNN_K, KNN_T = 200, 0.1
CPU = torch.device("cpu")
# How both libraries' encoders read CIFAR images (kNN eval views, our encoder for the FLOP count).
CIFAR_READER = Reader("image", {"channels": 3, "image_size": 32, "cifar_stem": True})
# Our side's encoder unless a part says otherwise: ResNet-18 with the CIFAR stem, the network lightly's recipe
# trains. Named here because the project's default for 32 px images on a CPU is now small_cnn_grid (issue 13),
# which would compare a small CNN with lightly's ResNet-18.
OURS_BACKBONE = "resnet18"


# --- bookkeeping ----------------------------------------------------------------------------------

def _git(*args) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    """Library versions, the CPU, torch's threads and the checkout: stored with every record."""
    try:
        import lightly
        lightly_version = lightly.__version__
    except ImportError:
        lightly_version = None
    import torchvision
    cpu = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "lightly": lightly_version,
            "python": platform.python_version(), "cpu": cpu, "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "git_head": _git("rev-parse", "--short", "HEAD"),
            "library_dirty": bool(_git("status", "--porcelain", "--", "contrastive"))}


class Results:
    """Appends one JSON object a line; every record carries the part, the time and the machine's load."""

    def __init__(self, path: Path, env: dict):
        self.path = Path(path)
        self.env = env
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict] = []

    def add(self, **record) -> dict:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **record, "loadavg_1m": round(os.getloadavg()[0], 2),
                  "env": self.env}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.records.append(record)
        return record


def say(*args):
    print(*args, flush=True)


def fmt(x, digits=1):
    return "-" if x is None else f"{x:.{digits}f}"


# --- the shared measures --------------------------------------------------------------------------

def durations(clock: list[list[float]]) -> list[float]:
    """Per-step seconds from per-epoch lists of batch-request times (the time between two requests is one
    step: producing the batch, forward, backward, optimizer, bookkeeping). Work between epochs is left out."""
    return [b - a for stamps in clock for a, b in itertools.pairwise(stamps)]


def knn(encoder: nn.Module, data) -> float:
    """Weighted kNN top-1 (k=200, T=0.1, cosine): data.train as the bank, data.test as queries; the same
    function (contrastive.evaluate.knn) and the same eval transform for both libraries."""
    return encoder_knn_accuracy(encoder, data.train, data.test, data.num_classes, CIFAR_READER, CPU, KNN_K, KNN_T)


# --- the quality tables (parts 2 and 2b) -----------------------------------------------------------

def quality_row(name, method, r, knn_top1, batch, extra=None):
    """One library's trained run as a row: kNN top-1, steps, pairs/s over the timed steps, wall seconds."""
    steps_time = sum(r["durations"])
    return {"library": name, "method": method, "knn_top1": knn_top1, "steps": r["steps"],
            "pairs_per_s": batch * len(r["durations"]) / steps_time if steps_time else None,
            "train_wall_s": r["wall"], **(extra or {})}


def print_quality(title, rows, floor):
    say(f"\n{title}; random-init kNN floor: " + ", ".join(f"{k} {v:.4f}" for k, v in floor.items()))
    say("| method | library | kNN top-1 | steps | pairs/s (steps) | train wall s | epochs |")
    say("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        say(f"| {r['method']} | {r['library']} | {r['knn_top1']:.4f} | {r['steps']} | {fmt(r['pairs_per_s'])} | "
            f"{r['train_wall_s']:.0f} | {fmt(r.get('epochs'), 2)} |")
