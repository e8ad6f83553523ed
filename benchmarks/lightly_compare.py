#!/usr/bin/env python
"""Side by side: `contrastive` against lightly 1.6.0 on CIFAR-10 JPEGs (issue 6).

Subcommands (each appends JSON lines to --results and prints a markdown table):

  prepare         unpack the CIFAR-10 JPEG archive to --data-root (if train/ is missing) and build the
                  10k-image subset folder (first --per-class files of each class, sorted; symlinks)
  peak            fp32 and bf16 square-matmul peak of this machine (GFLOP/s)
  throughput      part 1 + 3: pairs of views per second, ResNet-18 with the CIFAR stem, 32 px, batch 256,
                  SimCLR / MoCo v2 / BYOL in each library's standard CIFAR recipe, data loading and
                  augmentation included; model FLOPs per pair and the fraction of the matmul peak
  quality-epochs  part 2: 10k training images, ResNet-18 (3x3 stride-1 stem, max-pool kept), 5 epochs,
                  SGD lr 0.06 x batch/256, momentum 0.9, wd 5e-4, cosine; weighted kNN on the 10k test images
  quality-time    part 2b: the same 10k images, each library trains N minutes with its standard recipe
  profile         where one training step of ours (and of lightly) spends its time (torch.profiler)

Both libraries read the same JPEG files with their own pipelines:
  ours     contrastive.image.data.load_data("folder:...") decodes every file once into a uint8 tensor (timed and
           reported on its own), then contrastive.train.pretrain trains on its fast path (whole batches
           augmented as tensors). The benchmark calls pretrain() itself and only timestamps each batch request
           (a contrastive.train.Callback whose wrap_batches wraps each epoch's iterator of batches), so the
           numbers are what a user of pretrain() gets.
  lightly  LightlyDataset (a torchvision DatasetFolder: PIL decode per item) + DataLoader with lightly's
           per-image transforms, in a plain PyTorch loop (lightly's README style) around lightly's heads,
           losses and utils.

The lightly recipes follow lightly's CIFAR-10 benchmark script,
lightly-ai/lightly: docs/source/getting_started/benchmarks/cifar10_benchmark.py (versions read through
the search tool; the 2023+ versions use lightly.transforms, older ones the equivalent collate functions):
  backbone   ResNetGenerator("resnet-18") (CIFAR ResNet-18: 3x3 stride-1 stem, no max-pool; MoCo with
             num_splits=8 split batch norm), children[:-1] + AdaptiveAvgPool2d(1)
  transforms SimCLR and MoCo: SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0);
             BYOL: BYOLTransform(BYOLView1Transform(input_size=32, gaussian_blur=0.0),
                                 BYOLView2Transform(input_size=32, gaussian_blur=0.0))
  SimCLR     SimCLRProjectionHead(512, 512, 128), NTXentLoss() (temperature 0.5)
  MoCo v2    MoCoProjectionHead(512, 512, 128), momentum copies updated with update_momentum(m=0.99) at the
             start of each step, batch_shuffle / batch_unshuffle for the keys, NTXentLoss(temperature=0.1,
             memory_bank_size=4096), symmetric loss 0.5 * (L(x0, x1) + L(x1, x0))
  BYOL       BYOLProjectionHead(512, 1024, 256), BYOLPredictionHead(256, 1024, 256), update_momentum(m=0.99),
             NegativeCosineSimilarity, loss 0.5 * (L(p0, z1) + L(p1, z0))
  optimizer  SGD(lr=0.06 * batch / 128, momentum 0.9, weight_decay 5e-4) on all trainable parameters,
             CosineAnnealingLR(max_epochs) stepped once per epoch; fp32 (the Lightning Trainer's default)
  kNN        k=200, T=0.1 (the same monitor as ours)
Methods beyond the three (--methods simsiam,barlow_twins,vicreg,dino,swav; issue 15) are our code around
lightly's heads, losses and transforms, sized like our defaults (not from lightly's benchmark script):
  SimSiam    SimSiamProjectionHead(512, 2048, 2048), SimSiamPredictionHead(2048, 512, 2048), NegativeCosineSimilarity,
             SimSiamTransform(input_size=32, gaussian_blur=0.0)
  Barlow Twins / VICReg  BarlowTwinsProjectionHead(512, 2048, 2048) + BarlowTwinsLoss() / VICRegProjectionHead(512,
             2048, 2048, 3) + VICRegLoss(); SimCLRTransform as SimCLR's
  DINO       DINOProjectionHead(512, 2048, 256, 65536), teacher EMA cosine 0.996 -> 1 (lightly's cosine_schedule),
             DINOLoss (teacher T 0.04, no warm-up); no last-layer freeze (ours: 1% of the steps)
  SwAV       SwaVProjectionHead(512, 2048, 128), SwaVPrototypes(128, 3000, 313 frozen steps), SwaVLoss; no queue
             (ours: 3840 embeddings after 7.5% of the steps)
  multi-crop DINOTransform(global_crop_size=32, local_crop_size=16, n_local_views=6, no blur) for both, the views
             of our "multicrop" recipe at 32 px; FLOPs and pairs/s count one image's 2 + 6 crops as a "pair"
Differences from ours that shape the comparison (ours: contrastive/config.py defaults): lightly's lr is
0.06 x batch/128 (0.12 at 256; ours 0.06 x batch/256) without warm-up and with weight decay on BN and biases;
its MoCo loss is symmetric (about 2x our FLOPs a pair; ours is the paper's asymmetric loss, T=0.2); its BYOL
heads are 1024 wide with a constant m=0.99 (ours 4096, tau 0.996 -> 1 cosine); its SimCLR head has 2 layers
(ours the 3-layer SimCLRv2 head), each view through BN on its own (ours: both views in one batch);
children[:-1] of ResNetGenerator drops the ReLU after the stem's BN (it lives in ResNet.forward). Part 2 uses
the same network and lr for both; parts 1 and 2b each library's own recipe, and part 3's FLOPs/pair makes
the throughput of unequal recipes comparable.

Run from the repository root:  python benchmarks/lightly_compare.py SUBCOMMAND --help
Needs `pip install -e .[bench]` (lightly==1.6.0; it leaves torch / torchvision as they are).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run from a checkout without installing

from contrastive.config import KnnConfig, PretrainConfig
from contrastive.device import resolve_precision
from contrastive.evaluate.knn import encoder_knn_accuracy
from contrastive.image import backbones as our_backbones
from contrastive.image.data import DataSplits, ImageSet, load_data
from contrastive.modality import Reader
from contrastive.train import Callback

METHODS = ("simclr", "moco", "byol")
# Also comparable (--methods): the methods lightly has too (issue 15). DINO and SwAV take multi-crop views.
MORE_METHODS = ("simsiam", "barlow_twins", "vicreg", "dino", "swav")
MULTICROP = ("dino", "swav")
ARCHIVES = ("/work/shared/data/cifar10-jpg.tar.gz", str(REPO.parent / "shared/data/cifar10-jpg.tar.gz"),
            str(REPO / ".data/cifar10-jpg.tar.gz"))
DEFAULT_RESULTS = REPO / "benchmarks/results/lightly_compare.jsonl"
LIGHTLY_SOURCE = "lightly-ai/lightly docs/source/getting_started/benchmarks/cifar10_benchmark.py"
KNN_K, KNN_T = 200, 0.1
MAXPOOL_BACKBONE = "resnet18_stem3_maxpool"  # registered in contrastive.image.backbones.BACKBONES by this script
CPU = torch.device("cpu")
# How both libraries' encoders read CIFAR images (kNN eval views, our encoder for the FLOP count).
CIFAR_READER = Reader("image", {"channels": 3, "image_size": 32, "cifar_stem": True})


# --- bookkeeping ----------------------------------------------------------------------------------

def environment() -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10,
                                  check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

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
            "torch_threads": torch.get_num_threads(), "git_head": git("rev-parse", "--short", "HEAD"),
            "library_dirty": bool(git("status", "--porcelain", "--", "contrastive"))}


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


# --- data -----------------------------------------------------------------------------------------

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


# --- backbones ------------------------------------------------------------------------------------

def resnet18_stem3_maxpool(in_channels: int = 3) -> tuple[nn.Module, int]:
    """torchvision ResNet-18 with a 3x3 stride-1 first conv and the max-pool KEPT (maps 32 -> 16 before
    layer1). contrastive.image.backbones has no such variant (cifar_stem removes the max-pool), so this script
    builds it for both libraries."""
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
    feat_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feat_dim


def register_maxpool_backbone() -> None:
    """Make the variant reachable by name from PretrainConfig(backbone=...) through the public registry."""
    our_backbones.BACKBONES[MAXPOOL_BACKBONE] = lambda in_channels, cifar_stem: resnet18_stem3_maxpool(in_channels)


def to_lightly_split_bn(module: nn.Module, splits: int) -> nn.Module:
    """Every BatchNorm2d -> lightly's SplitBatchNorm (what ResNetGenerator(num_splits=8) uses for MoCo)."""
    from lightly.models.batchnorm import SplitBatchNorm

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, SplitBatchNorm(child.num_features, splits))
        else:
            to_lightly_split_bn(child, splits)
    return module


def lightly_backbone(method: str, arch: str) -> tuple[nn.Module, int]:
    if arch == "generator":  # lightly's CIFAR recipe
        from lightly.models import ResNetGenerator

        resnet = ResNetGenerator("resnet-18", num_splits=8 if method == "moco" else 0)
        return nn.Sequential(*list(resnet.children())[:-1], nn.AdaptiveAvgPool2d(1)), 512
    if arch == "maxpool":  # part 2: the same network as ours
        net, dim = resnet18_stem3_maxpool()
        return (to_lightly_split_bn(net, 8) if method == "moco" else net), dim
    if arch == "torchvision":  # torchvision ResNet-18 with the CIFAR stem, exactly our default encoder
        net, dim = our_backbones.build_backbone("resnet18", 3, cifar_stem=True)
        return (to_lightly_split_bn(net, 8) if method == "moco" else net), dim
    raise ValueError(arch)


# --- lightly's recipes (our code; the recipe is lightly's, see the module docstring) ---------------

def lightly_transform(method: str):
    from lightly.transforms import (BYOLTransform, BYOLView1Transform, BYOLView2Transform, DINOTransform,
                                    SimCLRTransform, SimSiamTransform)

    if method in ("simclr", "moco", "barlow_twins", "vicreg"):
        return SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0)
    if method == "simsiam":  # MoCo v2's views (SimSiam appendix A), as our "moco" recipe; no blur at 32 px
        return SimSiamTransform(input_size=32, gaussian_blur=0.0)
    if method in MULTICROP:  # the views of our "multicrop" recipe at 32 px: 2 x 32 (0.4-1) + 6 x 16 (0.05-0.4),
        # jitter 0.5 x (0.8, 0.8, 0.4, 0.2) = (0.4, 0.4, 0.2, 0.1), no blur below 64 px, solarize 0.2 on view 2
        return DINOTransform(global_crop_size=32, local_crop_size=16, n_local_views=6, gaussian_blur=(0.0, 0.0, 0.0))
    return BYOLTransform(view_1_transform=BYOLView1Transform(input_size=32, gaussian_blur=0.0),
                         view_2_transform=BYOLView2Transform(input_size=32, gaussian_blur=0.0))


class LightlySimCLR(nn.Module):
    def __init__(self, backbone: nn.Module, dim: int):
        super().__init__()
        from lightly.loss import NTXentLoss
        from lightly.models.modules.heads import SimCLRProjectionHead

        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(dim, dim, 128)
        self.criterion = NTXentLoss()  # temperature 0.5

    def embed(self, x):
        return self.projection_head(self.backbone(x).flatten(start_dim=1))

    def training_loss(self, x0, x1):
        return self.criterion(self.embed(x0), self.embed(x1))

    def trainable(self):
        return list(self.parameters())


class LightlyMoCo(nn.Module):
    def __init__(self, backbone: nn.Module, dim: int, m: float = 0.99):
        super().__init__()
        from lightly.loss import NTXentLoss
        from lightly.models.modules.heads import MoCoProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        self.backbone = backbone
        self.projection_head = MoCoProjectionHead(dim, dim, 128)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NTXentLoss(temperature=0.1, memory_bank_size=(4096, 128))
        self.m = m

    def training_loss(self, x0, x1):
        from lightly.models.utils import batch_shuffle, batch_unshuffle, update_momentum

        update_momentum(self.backbone, self.backbone_momentum, self.m)
        update_momentum(self.projection_head, self.projection_head_momentum, self.m)

        def queries_and_keys(xq, xk):
            xk, shuffle = batch_shuffle(xk)
            q = self.projection_head(self.backbone(xq).flatten(start_dim=1))
            k = self.projection_head_momentum(self.backbone_momentum(xk).flatten(start_dim=1))
            return q, batch_unshuffle(k, shuffle)

        return 0.5 * (self.criterion(*queries_and_keys(x0, x1)) + self.criterion(*queries_and_keys(x1, x0)))

    def trainable(self):
        return list(self.backbone.parameters()) + list(self.projection_head.parameters())


class LightlyBYOL(nn.Module):
    def __init__(self, backbone: nn.Module, dim: int, m: float = 0.99):
        super().__init__()
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules.heads import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(dim, 1024, 256)
        self.prediction_head = BYOLPredictionHead(256, 1024, 256)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NegativeCosineSimilarity()
        self.m = m

    def online(self, x):
        return self.prediction_head(self.projection_head(self.backbone(x).flatten(start_dim=1)))

    def target(self, x):
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()

    def training_loss(self, x0, x1):
        from lightly.models.utils import update_momentum

        update_momentum(self.backbone, self.backbone_momentum, self.m)
        update_momentum(self.projection_head, self.projection_head_momentum, self.m)
        p0, z0, p1, z1 = self.online(x0), self.target(x0), self.online(x1), self.target(x1)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))

    def trainable(self):
        return (list(self.backbone.parameters()) + list(self.projection_head.parameters())
                + list(self.prediction_head.parameters()))


class LightlySimSiam(nn.Module):
    """lightly's SimSiam example with our default widths (2048-d 3-layer projector, 512-d predictor)."""

    def __init__(self, backbone: nn.Module, dim: int):
        super().__init__()
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules.heads import SimSiamPredictionHead, SimSiamProjectionHead

        self.backbone = backbone
        self.projection_head = SimSiamProjectionHead(dim, 2048, 2048)
        self.prediction_head = SimSiamPredictionHead(2048, 512, 2048)
        self.criterion = NegativeCosineSimilarity()

    def training_loss(self, x0, x1):
        z0, z1 = (self.projection_head(self.backbone(x).flatten(start_dim=1)) for x in (x0, x1))
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        return 0.5 * (self.criterion(p0, z1.detach()) + self.criterion(p1, z0.detach()))

    def trainable(self):
        return list(self.parameters())


class LightlyRedundancy(nn.Module):
    """lightly's Barlow Twins / VICReg examples with our default 2048-d, 3-layer heads and the losses' defaults."""

    def __init__(self, backbone: nn.Module, dim: int, method: str):
        super().__init__()
        from lightly.loss import BarlowTwinsLoss, VICRegLoss
        from lightly.models.modules.heads import BarlowTwinsProjectionHead, VICRegProjectionHead

        self.backbone = backbone
        if method == "barlow_twins":
            self.projection_head, self.criterion = BarlowTwinsProjectionHead(dim, 2048, 2048), BarlowTwinsLoss()
        else:
            self.projection_head, self.criterion = VICRegProjectionHead(dim, 2048, 2048, 3), VICRegLoss()

    def training_loss(self, x0, x1):
        return self.criterion(*(self.projection_head(self.backbone(x).flatten(start_dim=1)) for x in (x0, x1)))

    def trainable(self):
        return list(self.parameters())


class LightlyDINO(nn.Module):
    """lightly's DINO example with our defaults: head 2048 -> 256 -> 65536, teacher EMA 0.996 -> 1 on a cosine
    over the run (run_lightly sets total_steps), teacher temperature 0.04 without warm-up. Not as ours: no
    last-layer freeze (ours: the first 1% of the steps)."""

    def __init__(self, backbone: nn.Module, dim: int):
        super().__init__()
        from lightly.loss import DINOLoss
        from lightly.models.modules.heads import DINOProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        self.student_backbone, self.student_head = backbone, DINOProjectionHead(dim, 2048, 256, 65536)
        self.teacher_backbone = copy.deepcopy(backbone)
        self.teacher_head = DINOProjectionHead(dim, 2048, 256, 65536)
        self.teacher_head.load_state_dict(self.student_head.state_dict())
        deactivate_requires_grad(self.teacher_backbone)
        deactivate_requires_grad(self.teacher_head)
        self.criterion = DINOLoss(output_dim=65536, warmup_teacher_temp_epochs=0)
        self.backbone = self.student_backbone  # what the kNN reads
        self.step, self.total_steps = 0, 1

    def training_loss(self, *views):
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        m = cosine_schedule(self.step, max(1, self.total_steps), 0.996, 1.0)
        update_momentum(self.student_backbone, self.teacher_backbone, m)
        update_momentum(self.student_head, self.teacher_head, m)
        self.step += 1
        with torch.no_grad():
            teacher = [self.teacher_head(self.teacher_backbone(x).flatten(start_dim=1)) for x in views[:2]]
        student = [self.student_head(self.student_backbone(x).flatten(start_dim=1)) for x in views]
        return self.criterion(teacher, student, epoch=0)

    def trainable(self):
        return list(self.student_backbone.parameters()) + list(self.student_head.parameters())


class LightlySwAV(nn.Module):
    """lightly's SwAV example with our defaults: head 2048 -> 128, 3000 prototypes frozen for 313 steps,
    temperature 0.1, Sinkhorn epsilon 0.05 x 3. Not as ours: no queue (ours: 3840 embeddings after 7.5% of
    the steps, for batches below a few thousand)."""

    def __init__(self, backbone: nn.Module, dim: int):
        super().__init__()
        from lightly.loss import SwaVLoss
        from lightly.models.modules.heads import SwaVProjectionHead, SwaVPrototypes

        self.backbone = backbone
        self.projection_head = SwaVProjectionHead(dim, 2048, 128)
        self.prototypes = SwaVPrototypes(128, 3000, n_steps_frozen_prototypes=313)
        self.criterion = SwaVLoss()
        self.step = 0

    def training_loss(self, *views):
        self.prototypes.normalize()
        scores = [self.prototypes(nn.functional.normalize(self.projection_head(self.backbone(x).flatten(
            start_dim=1)), dim=1), self.step) for x in views]
        self.step += 1
        return self.criterion(scores[:2], scores[2:])

    def trainable(self):
        return list(self.parameters())


def build_lightly(method: str, arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    backbone, dim = lightly_backbone(method, arch)
    if method in ("barlow_twins", "vicreg"):
        return LightlyRedundancy(backbone, dim, method)
    return {"simclr": LightlySimCLR, "moco": LightlyMoCo, "byol": LightlyBYOL, "simsiam": LightlySimSiam,
            "dino": LightlyDINO, "swav": LightlySwAV}[method](backbone, dim)


def lightly_encoder(model: nn.Module) -> nn.Module:
    return nn.Sequential(model.backbone, nn.Flatten())


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
    bf16 = precision == "bf16"
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
            if steps is not None:
                scheduler.step()
        else:
            stamps.append(time.perf_counter())  # the budget ended inside the epoch: close its last step
        del it
        if steps is None:
            scheduler.step()
    wall = time.perf_counter() - start
    return {"model": model, "durations": durations(clock), "wall": wall, "steps": done, "per_epoch": per_epoch,
            "index_seconds": index_seconds, "loss_first": losses[0], "loss_last": losses[-1]}


# --- ours through pretrain() ----------------------------------------------------------------------

def durations(clock: list[list[float]]) -> list[float]:
    """Per-step seconds from per-epoch lists of batch-request times (the time between two requests is one
    step: producing the batch, forward, backward, optimizer, bookkeeping). Work between epochs is left out."""
    return [b - a for stamps in clock for a, b in itertools.pairwise(stamps)]


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


# Our side's encoder unless a part says otherwise: ResNet-18 with the CIFAR stem, the network lightly's recipe
# trains. Named here because the project's default for 32 px images on a CPU is now small_cnn_grid (issue 13),
# which would compare a small CNN with lightly's ResNet-18.
OURS_BACKBONE = "resnet18"


def run_ours(method: str, data, *, batch: int, precision: str = "auto", steps: int | None = None,
             epochs: int | None = None, backbone: str | None = None, lr: float | None = None, seed: int = 0) -> dict:
    """contrastive.train.pretrain with our defaults except what is passed; kNN monitoring off (the
    benchmark scores both libraries with one kNN afterwards), no checkpoints inside epochs.
    steps: stop after this many steps (the cosine schedule then ends there); epochs: whole epochs."""
    from contrastive.train import pretrain

    per_epoch = len(data.train) // batch
    if per_epoch == 0:
        sys.exit(f"{data.name} has {len(data.train)} training images, fewer than the batch of {batch}")
    if epochs is None:
        epochs = max(1, math.ceil(steps / per_epoch))
    out = Path(tempfile.mkdtemp(prefix=f"ours-{method}-", dir=os.environ.get("BENCH_TMP", "/tmp")))
    cfg = PretrainConfig(method=method, data=data.name, batch_size=batch, epochs=epochs, max_steps=steps,
                         backbone=backbone or OURS_BACKBONE, lr=lr, precision=precision, knn=KnnConfig(every=0),
                         log_every=10 ** 9, checkpoint_minutes=0.0, out=str(out / "run"), seed=seed)
    clock = BatchClock()
    try:
        t0 = time.perf_counter()
        result = pretrain(cfg, data=data, log=lambda *a, **k: None, callbacks=[clock])
        wall = time.perf_counter() - t0
        with open(out / "run" / "metrics.jsonl") as f:
            metrics = [json.loads(line) for line in f]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    losses = [m["epoch_loss"] for m in metrics if "epoch_loss" in m]
    return {"model": result.model, "durations": durations(clock.clock), "wall": wall, "steps": result.steps,
            "per_epoch": per_epoch, "precision": result.config.precision, "config": result.config,
            "loss_last_epoch": losses[-1] if losses else None}


def fake_cifar(n: int = 8) -> DataSplits:
    """A few random uint8 3x32x32 images shaped like CIFAR-10: enough to resolve a config without the data."""
    g = torch.Generator().manual_seed(0)
    split = ImageSet(images=torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                     labels=torch.arange(n) % 10)
    return DataSplits(name="cifar10:fake", train=split, test=split, num_classes=10, channels=3, image_size=32,
                      classes=[str(c) for c in range(10)])


def our_model_for_flops(method: str, batch: int, backbone: str | None = None) -> nn.Module:
    """Our method as pretrain() builds it for 32 px CIFAR images at this batch (MoCo's BN splits follow the
    batch), from the config resolved on a stand-in for the data."""
    from contrastive.train import build_model

    cfg = PretrainConfig(method=method, batch_size=batch, backbone=backbone or OURS_BACKBONE).resolve(fake_cifar())
    torch.manual_seed(0)
    return build_model(cfg, CIFAR_READER)[0]


# --- FLOPs and the matmul peak (part 3) -----------------------------------------------------------

def flops_per_pair(step, batch: int) -> float:
    """Model FLOPs (matmuls and convolutions, 2 per multiply-add, torch's FlopCounterMode) of one forward +
    backward of a training step on `batch` pairs, divided by `batch`."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss = step()
        loss.backward()
    return counter.get_total_flops() / batch


def method_flops(method: str, batch: int, ours_backbone: str | None, lightly_arch: str) -> dict:
    sizes = [32, 32] + ([16] * 6 if method in MULTICROP else [])  # a multi-crop "pair" is 2 + 6 crops
    views = [torch.randn(batch, 3, s, s) for s in sizes]
    ours = our_model_for_flops(method, batch, ours_backbone).train()
    theirs = build_lightly(method, lightly_arch).train()
    return {"ours": flops_per_pair(lambda: ours(views)[0], batch),
            "lightly": flops_per_pair(lambda: theirs.training_loss(*views), batch)}


def matmul_peak(n: int = 2048, reps: int = 8) -> dict:
    """Best GFLOP/s of an n x n x n matmul in fp32 and bf16 (2 n^3 FLOPs each), with torch's thread count."""
    peak = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        for _ in range(2):
            a @ b
        best = math.inf
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
        peak[name] = 2 * n ** 3 / best / 1e9
    return peak


# --- kNN --------------------------------------------------------------------------------------------

def knn(encoder: nn.Module, data) -> float:
    """Weighted kNN top-1 (k=200, T=0.1, cosine): data.train as the bank, data.test as queries; the same
    function (contrastive.evaluate.knn) and the same eval transform for both libraries."""
    return encoder_knn_accuracy(encoder, data.train, data.test, data.num_classes, CIFAR_READER, CPU, KNN_K, KNN_T)


# --- subcommands --------------------------------------------------------------------------------------

def cmd_prepare(args, results):
    root = ensure_cifar(Path(args.data_root), args.archive)
    sub = class_subset(root, args.per_class, args.test_per_class)
    say(f"CIFAR-10 JPEGs: {root} (train {sum(1 for _ in (root / 'train').rglob('*.jpg'))}, "
        f"test {sum(1 for _ in (root / 'test').rglob('*.jpg'))}); subset: {sub}")


def cmd_peak(args, results):
    peaks = [matmul_peak(args.matmul_n) for _ in range(2)]
    peak = {k: max(p[k] for p in peaks) for k in peaks[0]}
    results.add(part="peak", matmul_n=args.matmul_n, gflops=peak)
    say(f"| matmul {args.matmul_n}^3 | fp32 GFLOP/s | bf16 GFLOP/s |\n| --- | --- | --- |\n"
        f"| best of 2x8 | {peak['fp32']:.0f} | {peak['bf16']:.0f} |")
    return peak


def pairs_per_s(d: list[float], batch: int, warmup: int, steps: int) -> float:
    window = d[warmup:warmup + steps]
    if len(window) < steps:
        raise RuntimeError(f"only {len(d)} timed steps, need {warmup + steps}")
    return batch * len(window) / sum(window)


def cmd_throughput(args, results):
    """Part 1 (and 3): interleaved per method and repetition: ours, lightly with each worker count."""
    root = ensure_cifar(Path(args.data_root), args.archive)
    train_root = class_subset(root, args.per_class) if args.per_class else root
    spec = f"folder:{train_root / 'train'}"  # no train/ inside: an unlabeled folder of all training JPEGs
    data, decode_s, n = load_ours(spec)
    results.add(part="decode", spec=spec, images=n, seconds=decode_s, images_per_s=n / decode_s)
    say(f"ours: load_data({spec!r}) decoded {n} JPEGs into a uint8 tensor in {decode_s:.1f} s "
        f"({n / decode_s:.0f} img/s), once per process")
    peak = cmd_peak(args, results) if not args.no_flops else None
    workers = [int(w) for w in args.workers.split(",")]
    rows = []
    for method in args.methods.split(","):
        rates = {"ours": [], **{f"lightly-w{w}": [] for w in workers}}
        for rep in range(args.reps):
            load0 = os.getloadavg()[0]
            r = run_ours(method, data, batch=args.batch, precision=args.ours_precision,
                         steps=args.warmup + args.steps + 1)  # +1: the last step's end is the next request
            rate = pairs_per_s(r["durations"], args.batch, args.warmup, args.steps)
            rates["ours"].append(rate)
            results.add(part="throughput", library="contrastive", method=method, rep=rep, workers=0,
                        precision=r["precision"], batch=args.batch, warmup=args.warmup, steps=args.steps,
                        pairs_per_s=rate, step_seconds=r["durations"][args.warmup:args.warmup + args.steps],
                        loadavg_before=round(load0, 2), backbone=r["config"].backbone,
                        cifar_stem=r["config"].data_options["cifar_stem"], augment="batch (uint8 tensor cache)")
            say(f"  {method} rep {rep} ours ({r['precision']}): {rate:.1f} pairs/s")
            del r
            for w in workers:
                load0 = os.getloadavg()[0]
                r = run_lightly(method, train_root / "train", arch=args.lightly_arch, workers=w, batch=args.batch,
                                precision=args.lightly_precision, lr=0.06 * args.batch / 128,
                                steps=args.warmup + args.steps)
                rate = pairs_per_s(r["durations"], args.batch, args.warmup, args.steps)
                rates[f"lightly-w{w}"].append(rate)
                results.add(part="throughput", library="lightly", method=method, rep=rep, workers=w,
                            precision=args.lightly_precision, batch=args.batch, warmup=args.warmup, steps=args.steps,
                            pairs_per_s=rate, step_seconds=r["durations"][args.warmup:args.warmup + args.steps],
                            loadavg_before=round(load0, 2), backbone=args.lightly_arch,
                            dataset_index_seconds=r["index_seconds"], augment="per-image PIL (LightlyDataset)")
                say(f"  {method} rep {rep} lightly workers={w} ({args.lightly_precision}): {rate:.1f} pairs/s")
                del r
        med = {k: statistics.median(v) for k, v in rates.items()}
        best_key = max((k for k in med if k.startswith("lightly")), key=med.get)
        row = {"method": method, **med, "lightly_best": best_key, "ratio": med["ours"] / med[best_key]}
        if peak is not None:
            fl = method_flops(method, args.batch, None, args.lightly_arch)
            row.update(gflop_pair_ours=fl["ours"] / 1e9, gflop_pair_lightly=fl["lightly"] / 1e9,
                       model_gflops_ours=fl["ours"] * med["ours"] / 1e9,
                       model_gflops_lightly=fl["lightly"] * med[best_key] / 1e9)
        rows.append(row)
    if peak is not None:  # the peak again at the end; the better of the two is the machine's
        end = cmd_peak(args, results)
        peak = {k: max(peak[k], end[k]) for k in peak}
        our_peak = peak["bf16" if resolve_precision(args.ours_precision, CPU) == "bf16" else "fp32"]
        their_peak = peak["bf16" if args.lightly_precision == "bf16" else "fp32"]
        for row in rows:
            row.update(mfu_ours=row["model_gflops_ours"] / our_peak, mfu_lightly=row["model_gflops_lightly"] / their_peak)
    for row in rows:
        results.add(part="throughput_summary", batch=args.batch, warmup=args.warmup, steps=args.steps,
                    reps=args.reps, ours_precision=resolve_precision(args.ours_precision, CPU),
                    lightly_precision=args.lightly_precision, lightly_arch=args.lightly_arch, peak_gflops=peak,
                    **row)
    cols = ["ours"] + [f"lightly-w{w}" for w in workers]
    say(f"\nThroughput, pairs/s (median of {args.reps}), batch {args.batch}, {args.steps} steps after "
        f"{args.warmup} warm-up, data loading + augmentation included; ours "
        f"{resolve_precision(args.ours_precision, CPU)}, lightly {args.lightly_precision} ({args.lightly_arch})")
    say("| method | " + " | ".join(cols) + " | ours / best lightly | GFLOP/pair ours | GFLOP/pair lightly "
        "| model GFLOP/s ours | lightly | % of peak ours | lightly |")
    say("|" + " --- |" * (len(cols) + 8))
    for r in rows:
        say(f"| {r['method']} | " + " | ".join(fmt(r[c]) for c in cols) + f" | {r['ratio']:.2f}x | "
            + " | ".join([fmt(r.get("gflop_pair_ours"), 2), fmt(r.get("gflop_pair_lightly"), 2),
                          fmt(r.get("model_gflops_ours"), 0), fmt(r.get("model_gflops_lightly"), 0),
                          fmt(100 * r["mfu_ours"] if "mfu_ours" in r else None, 1),
                          fmt(100 * r["mfu_lightly"] if "mfu_lightly" in r else None, 1)]) + " |")
    if peak:
        say(f"matmul peak ({args.matmul_n}^3, best of start and end): fp32 {peak['fp32']:.0f} GFLOP/s, "
            f"bf16 {peak['bf16']:.0f} GFLOP/s; "
            f"% of peak = model FLOPs/pair x pairs/s / the peak of the precision each side trains in")


def quality_row(name, method, r, knn_top1, batch, extra=None):
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


def cmd_quality_epochs(args, results):
    """Part 2: equal epochs, equal network (3x3 stem + max-pool), equal optimizer settings."""
    register_maxpool_backbone()
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
        r = run_ours(method, data, batch=args.batch, epochs=args.epochs, backbone=MAXPOOL_BACKBONE, lr=0.06)
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
    cal_w, cal_n = 2, args.calibration_steps
    rows = []
    for method in args.methods.split(","):
        r = run_ours(method, data, batch=args.batch, steps=cal_w + cal_n + 1)
        step_s = sum(r["durations"][cal_w:cal_w + cal_n]) / cal_n
        target = max(1, int(budget / step_s))
        per_epoch = r["per_epoch"]
        del r
        r = run_ours(method, data, batch=args.batch, steps=target)
        row = quality_row("contrastive", method, r, knn(r["model"].encoder, data), args.batch,
                          {"epochs": target / per_epoch, "budget_s": budget, "calibrated_step_s": step_s,
                           "precision": r["precision"], "lr": r["config"].lr_scaled,
                           "backbone": r["config"].backbone, "cifar_stem": r["config"].data_options["cifar_stem"]})
        del r
        results.add(part="quality_time", batch=args.batch, **row)
        rows.append(row)
        say(f"  {method} ours: {target} steps ({row['epochs']:.2f} epochs), kNN {row['knn_top1']:.4f}")
        lr = 0.06 * args.batch / 128  # lightly's lr_factor = batch_size / 128
        r = run_lightly(method, root / "train", arch="generator", workers=args.lightly_workers, batch=args.batch,
                        precision=args.lightly_precision, lr=lr, steps=cal_w + cal_n)
        step_s = sum(r["durations"][cal_w:cal_w + cal_n]) / cal_n
        target = max(1, int(budget / step_s))
        per_epoch = r["per_epoch"]
        del r
        r = run_lightly(method, root / "train", arch="generator", workers=args.lightly_workers, batch=args.batch,
                        precision=args.lightly_precision, lr=lr, steps=target)
        row = quality_row("lightly", method, r, knn(lightly_encoder(r["model"]), data), args.batch,
                          {"epochs": target / per_epoch, "budget_s": budget, "calibrated_step_s": step_s,
                           "precision": args.lightly_precision, "lr": lr, "workers": args.lightly_workers,
                           "backbone": "ResNetGenerator resnet-18"})
        del r
        results.add(part="quality_time", batch=args.batch, **row)
        rows.append(row)
        say(f"  {method} lightly: {target} steps ({row['epochs']:.2f} epochs), kNN {row['knn_top1']:.4f}")
    print_quality(f"Quality at equal wall-clock ({args.minutes:g} min of training each, standard recipes), "
                  f"{len(data.train)} images, batch {args.batch}", rows, floor)


# --- profile ----------------------------------------------------------------------------------------

class ModuleRanges:
    """Profiler ranges around the forward of each top-level submodule (encoder, projector, ...)."""

    def __init__(self, model: nn.Module):
        self.handles, self.open = [], []
        for name, child in model.named_children():
            if any(True for _ in child.parameters()):
                self.handles.append(child.register_forward_pre_hook(self._enter(f"fwd {name}")))
                self.handles.append(child.register_forward_hook(self._exit))

    def _enter(self, label):
        def hook(module, inputs):
            r = torch.profiler.record_function(label)
            r.__enter__()
            self.open.append(r)
        return hook

    def _exit(self, module, inputs, output):
        self.open.pop().__exit__(None, None, None)

    def remove(self):
        for h in self.handles:
            h.remove()


def profile_steps(model, next_views, loss_of, optimizer, after_step, steps, bf16):
    from torch.profiler import ProfilerActivity, profile, record_function

    ranges = ModuleRanges(model)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for s in range(steps):
            with record_function("step"):
                with record_function("data: load + augment"):
                    views = next_views()
                with record_function("forward (model + loss)"), \
                        torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = loss_of(views)
                with record_function("backward"):
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                with record_function("optimizer step"):
                    optimizer.step()
                with record_function("momentum / target update"):
                    after_step(s)
                loss.item()
    ranges.remove()
    events = prof.key_averages()
    by_name = {e.key: e for e in events}
    labels = ["step", "data: load + augment", "forward (model + loss)", "backward", "optimizer step",
              "momentum / target update"] + sorted(k for k in by_name if k.startswith("fwd "))
    ms = {k: by_name[k].cpu_time_total / 1e3 / steps for k in labels if k in by_name}
    top = sorted((e for e in events if not e.key.startswith(("step", "data:", "forward", "backward", "optimizer",
                                                             "momentum", "fwd ", "ProfilerStep"))),
                 key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    return ms, [(e.key, e.self_cpu_time_total / 1e3 / steps, e.count // steps) for e in top]


def layout_check(batch: int, reps: int = 3) -> dict:
    """Images/s of one forward + backward of our default encoder (torchvision ResNet-18, CIFAR stem) on
    `batch` images, NCHW (what pretrain runs today) against channels_last, in bf16 autocast and fp32."""
    out = {}
    for precision in ("bf16", "fp32"):
        for layout in ("nchw", "channels_last"):
            torch.manual_seed(0)
            enc, _ = our_backbones.build_backbone("resnet18", 3, cifar_stem=True)
            x = torch.randn(batch, 3, 32, 32)
            if layout == "channels_last":
                enc, x = enc.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
            best = math.inf
            for i in range(reps + 1):
                t = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    loss = enc(x).float().square().mean()
                loss.backward()
                if i:  # the first pass is a warm-up
                    best = min(best, time.perf_counter() - t)
            out[f"{precision} {layout}"] = batch / best
    return out


def profile_ours(method: str, data, args) -> tuple[str, dict, list]:
    """Our step from library functions, in pretrain's order: setup (resolved config, model in its memory
    layout, optimizer, views), epoch_batches (the fast path), the method's forward with its loss, backward,
    SGD step, update_target."""
    from contrastive.train import epoch_batches, setup

    out = Path(tempfile.mkdtemp(prefix=f"profile-{method}-", dir=os.environ.get("BENCH_TMP", "/tmp")))
    cfg = PretrainConfig(method=method, data=data.name, batch_size=args.batch, precision=args.ours_precision,
                         backbone=OURS_BACKBONE, device="cpu", knn=KnnConfig(every=0), out=str(out / "run"))
    try:
        run = setup(cfg, data, log=lambda *a, **k: None)  # claims the run folder; nothing is written to it here
        model = run.model.train()
        batches = epoch_batches(run, 0)
        total = args.steps + 1

        def steps_of(steps):
            return profile_steps(model, lambda: next(batches)[0], lambda v: run.forward(v)[0], run.optimizer,
                                 lambda s: model.update_target(s / total), steps, run.cfg.precision == "bf16")

        steps_of(1)  # one untimed step first (allocator, oneDNN kernels)
        return run.cfg.precision, *steps_of(args.steps)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def profile_lightly(method: str, train_dir: Path, args) -> tuple[dict, list]:
    from lightly.data import LightlyDataset

    model = build_lightly(method, args.lightly_arch).train()
    optimizer = torch.optim.SGD(model.trainable(), lr=0.06 * args.batch / 128, momentum=0.9, weight_decay=5e-4)
    loader = iter(torch.utils.data.DataLoader(
        LightlyDataset(input_dir=str(train_dir), transform=lightly_transform(method)),
        batch_size=args.batch, shuffle=True, drop_last=True, num_workers=args.lightly_workers))

    def run(steps):
        return profile_steps(model, lambda: next(loader)[0], lambda v: model.training_loss(*v), optimizer,
                             lambda s: None, steps, args.lightly_precision == "bf16")

    run(1)
    return run(args.steps)


def cmd_profile(args, results):
    """Per-step time split of our loop and of the lightly loop, method by method."""
    root = ensure_cifar(Path(args.data_root), args.archive)
    train_root = class_subset(root, args.per_class) if args.per_class else root
    data = load_ours(f"folder:{train_root / 'train'}")[0]
    for method in args.methods.split(","):
        precision, ours, ours_top = profile_ours(method, data, args)
        theirs, theirs_top = profile_lightly(method, train_root / "train", args)
        results.add(part="profile", method=method, batch=args.batch, steps=args.steps,
                    ours_precision=precision, lightly_precision=args.lightly_precision,
                    lightly_workers=args.lightly_workers, ours_ms=ours, lightly_ms=theirs,
                    ours_top_ops=ours_top, lightly_top_ops=theirs_top)
        say(f"\n{method}: ms per step (batch {args.batch}, mean of {args.steps} profiled steps; ranges nest: "
            f"'fwd <module>' lie inside 'forward', the EMA update of lightly lies inside its forward)")
        say(f"| range | ours ({precision}) | lightly ({args.lightly_precision}, {args.lightly_workers} workers) |")
        say("| --- | --- | --- |")
        for k in dict.fromkeys(list(ours) + list(theirs)):
            say(f"| {k} | {fmt(ours.get(k), 0)} | {fmt(theirs.get(k), 0)} |")
        for title, top in (("ours", ours_top), ("lightly", theirs_top)):
            say(f"\n{title}: top ops by self CPU time, ms per step (calls per step)")
            say("| op | ms | calls |\n| --- | --- | --- |")
            for name, t, c in top:
                say(f"| {name} | {t:.0f} | {c} |")
    if args.layout_check:
        rates = layout_check(2 * args.batch)
        results.add(part="layout_check", images=2 * args.batch, images_per_s=rates)
        say(f"\nour encoder alone, forward + backward of {2 * args.batch} images (SimCLR's concatenated views), "
            "best of 3, images/s")
        say("| precision | NCHW (today) | channels_last | gain |\n| --- | --- | --- | --- |")
        for precision in ("bf16", "fp32"):
            a, b = rates[f"{precision} nchw"], rates[f"{precision} channels_last"]
            say(f"| {precision} | {a:.1f} | {b:.1f} | {b / a:.2f}x |")


# --- main ---------------------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, per_class=None, methods=",".join(METHODS)):  # noqa: B008
        sp.add_argument("--data-root", default=os.environ.get("CIFAR_JPG", "/tmp/cifar"),
                        help="CIFAR-10 JPEGs: DIR/train/<class>/*.jpg, DIR/test/<class>/*.jpg (default /tmp/cifar)")
        sp.add_argument("--archive", default=None, help="cifar10-jpg.tar.gz to unpack when DIR/train is missing")
        sp.add_argument("--per-class", type=int, default=per_class,
                        help="train on the first N files of each class (a symlink folder next to DIR)")
        sp.add_argument("--test-per-class", type=int, default=None,
                        help="kNN queries: only the first N test files of each class (smoke runs; default all)")
        sp.add_argument("--methods", default=methods)
        sp.add_argument("--batch", type=int, default=256)
        sp.add_argument("--results", default=str(DEFAULT_RESULTS), help="JSON-lines file the records go to")
        sp.add_argument("--lightly-precision", choices=("fp32", "bf16"), default="fp32",
                        help="lightly's recipe trains in fp32 (the Lightning Trainer's default); bf16 autocast "
                             "shows what it would gain")
        sp.add_argument("--ours-precision", choices=("auto", "fp32", "bf16"), default="auto")
        sp.add_argument("--matmul-n", type=int, default=2048)
        sp.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")

    sp = sub.add_parser("prepare", help="unpack CIFAR-10 JPEGs and build the subset folder")
    common(sp, per_class=1000)
    sp = sub.add_parser("peak", help="fp32 / bf16 matmul peak")
    common(sp)
    sp = sub.add_parser("throughput", help="part 1 + 3")
    common(sp)
    sp.add_argument("--warmup", type=int, default=3)
    sp.add_argument("--steps", type=int, default=20)
    sp.add_argument("--reps", type=int, default=1, help="repetitions, interleaved ours / lightly per method")
    sp.add_argument("--workers", default="0,2", help="lightly DataLoader workers to try (comma-separated)")
    sp.add_argument("--lightly-arch", choices=("generator", "torchvision"), default="generator",
                    help="generator: lightly's ResNetGenerator (its recipe); torchvision: our exact encoder")
    sp.add_argument("--no-flops", action="store_true", help="skip the FLOP count and the matmul peak")
    sp = sub.add_parser("quality-epochs", help="part 2")
    common(sp, per_class=1000)
    sp.add_argument("--epochs", type=int, default=5)
    sp.add_argument("--lightly-workers", type=int, default=2)
    sp = sub.add_parser("quality-time", help="part 2b")
    common(sp, per_class=1000)
    sp.add_argument("--minutes", type=float, default=15.0, help="training budget per library and method")
    sp.add_argument("--calibration-steps", type=int, default=5, help="timed steps (after 2) to size the budget")
    sp.add_argument("--lightly-workers", type=int, default=2)
    sp = sub.add_parser("profile", help="where a step's time goes, ours and lightly")
    common(sp, methods="simclr")
    sp.add_argument("--steps", type=int, default=3)
    sp.add_argument("--lightly-workers", type=int, default=0)
    sp.add_argument("--lightly-arch", choices=("generator", "torchvision"), default="generator")
    sp.add_argument("--no-layout-check", dest="layout_check", action="store_false",
                    help="skip the NCHW / channels_last comparison of our encoder")

    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    results = Results(Path(args.results), environment())
    say(f"{args.command}: torch {results.env['torch']}, lightly {results.env['lightly']}, "
        f"{results.env['torch_threads']} threads, {results.env['cores']} cores, load {os.getloadavg()[0]:.2f}; "
        f"results -> {args.results}")
    {"prepare": cmd_prepare, "peak": cmd_peak, "throughput": cmd_throughput, "quality-epochs": cmd_quality_epochs,
     "quality-time": cmd_quality_time, "profile": cmd_profile}[args.command](args, results)


if __name__ == "__main__":
    main()
