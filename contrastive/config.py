"""The configuration of a pretraining run: every default once, with where it comes from.

A run is described by one frozen `PretrainConfig`. What belongs to a method (temperature,
head shape, queue, EMA rate, ...) is declared in that method's file (`Options`, see
contrastive.methods) and carried here as `method_options`; what belongs to a kind of data
(image size, view strength, ...) is declared by its modality (contrastive.modality_base) and
carried as `data_options`. Before resolve() they hold what was typed (a dict of the given
options, as the command line gives them, or an Options instance); `resolve()` fills every
default once, from the method, the optimizer, the data and the processes, and returns a new
config holding the method's and the modality's Options instances: the one the run uses, logs
and saves in every checkpoint (as plain dicts, `to_dict`; `from_dict` rebuilds the instances).
Nothing changes it afterwards.

The command line is generated from these fields (contrastive.fields), so each default and
its help are written here and nowhere else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from contrastive.device import pick_device
from contrastive.errors import ContrastiveError
from contrastive.fields import opt
from contrastive.modality import backbone_help, data_help, modality_named, modality_of
from contrastive.methods import (DEFAULT_METHOD, OPTIMIZERS, MethodOptions, method_module, method_names,
                                 options_for, resolve_options)

PRECISIONS = ("auto", "fp32", "bf16")

WEIGHT_DECAY = {
    "sgd": 5e-4,  # MoCo CIFAR demo and lightly CIFAR benchmarks.
    "lars": 1e-6,  # SimCLR sec. B.1 (BYOL uses 1.5e-6).
    "adamw": 1e-4,
}


# Small data wants more, smaller steps. On the embedded digits (3,600 training images: 14 steps an epoch at 256),
# validation kNN (k=20) after 15 epochs, batch 256 -> 64: BYOL 0.870 -> 0.9275, MoCo 0.935 -> 0.960 (queue 2048),
# SimCLR 0.960 -> 0.9675 (benchmarks/results/digits_ablation.jsonl). 50 steps an epoch puts the digits at 64 and
# leaves CIFAR-10's 50,000 images at 256.
MIN_STEPS_PER_EPOCH = 50
LARGEST_DEFAULT_BATCH, SMALLEST_DEFAULT_BATCH = 256, 32


def default_batch_size(n_items: int, world_size: int = 1) -> int:
    """256, halved while an epoch of `n_items` would have fewer than MIN_STEPS_PER_EPOCH steps, at least 32;
    rounded up to a multiple of `world_size` (a global batch splits evenly over the processes)."""
    batch = LARGEST_DEFAULT_BATCH
    while batch > SMALLEST_DEFAULT_BATCH and n_items // batch < MIN_STEPS_PER_EPOCH:
        batch //= 2
    return -(-batch // world_size) * world_size


@dataclass(frozen=True)
class KnnConfig:
    """The weighted kNN classifier on frozen features (Wu et al. 2018, arXiv:1805.01978; the MoCo demo's monitor)."""

    # Wu et al. 2018 use k=200 on ImageNet; over a few hundred items a class 200 neighbours reach into other
    # classes (on the digits k=200 read 0.82 where k=20 read 0.905 for one encoder), so 20 here.
    k: int = opt(20, "neighbours that vote (Wu et al. 2018: 200 on ImageNet; 20 suits a few hundred items a class)")
    temperature: float = opt(0.1, "vote weight exp(cosine similarity / T) (Wu et al. 2018: 0.1)")
    every: int = opt(1, "pretraining: epochs between kNN monitor runs (0: never, not even at the start or end)")


@dataclass(frozen=True)
class PretrainConfig:
    # --- what to train -------------------------------------------------------------
    method: str = opt(DEFAULT_METHOD, "the pretraining method (its own options are listed below)", choices=method_names)
    data: str | None = opt(None, data_help())
    backbone: str | None = opt(None, backbone_help())

    # --- optimisation ----------------------------------------------------------------
    epochs: int = opt(30, "passes over the training data (about two minutes of SimCLR on the embedded digits, "
                          "2 CPU cores)")
    batch_size: int | None = opt(None, "the global batch over all torchrun processes; each item gives two views; "
                                       "default 256 (SimCLR CIFAR and the MoCo demo use 256-512), halved down to "
                                       f"32 while an epoch would have fewer than {MIN_STEPS_PER_EPOCH} steps")
    # Measured on the whole Juliet suite (issue 24; AdamW bag, 8 epochs of SimCLR, 3 draws of 1% labels, validation
    # PR-AUC): tuned logistic probe 0.539 with random batches, 0.552 with whole flaw variants, 0.591 with whole test
    # cases; fine-tuned 0.675 / 0.677 / 0.680. An earlier measure by a colleague: +0.076 +- 0.014 for test cases.
    batch_groups: bool | None = opt(None, "fill batches with whole families of items, the families in a random "
                                          "order (Juliet: a test case's flawed function and its fixed twins), "
                                          "so near-identical twins are in-batch negatives; from the data's layout, "
                                          "not its labels. On all of Juliet it lifted a tuned linear probe's "
                                          "validation PR-AUC from 0.539 to 0.591. Default: on where the data has "
                                          "families (code), off elsewhere; asked for on data without families, "
                                          "refused")
    optimizer: str | None = opt(None, "sgd (momentum; CIFAR recipes), lars (large batches; SimCLR / BYOL on "
                                       "ImageNet) or adamw; default sgd, or adamw for an encoder that asks for it "
                                       "(the code bag, whose n-gram table SGD barely moves)", choices=OPTIMIZERS)
    lr: float | None = opt(None, "base learning rate per 256 items, scaled by batch/256 (the linear scaling rule, "
                                 "Goyal et al. 2017); default: the method's BASE_LR for the optimizer")
    weight_decay: float | None = opt(None, "never on BN or bias; default 5e-4 for SGD (CIFAR recipes), 1e-6 for "
                                           "LARS (SimCLR), 1e-4 for AdamW")
    momentum: float = opt(0.9, "SGD / LARS momentum (all three papers)")
    warmup_epochs: float | None = opt(None, "linear warmup before the cosine decay; default 10% of the epochs, "
                                            "at most 10 (SimCLR: 10 of 100)")
    precision: str = opt("auto", "auto: bf16 autocast where the chip computes bf16 natively (CUDA, CPUs with "
                                 "AVX512-BF16/AMX), else fp32", choices=PRECISIONS)

    # --- the method's and the data's own options (declared beside them) ---------------
    # given: a dict of the typed options (or an Options instance); resolved: the Options instances
    method_options: MethodOptions | dict = opt(default_factory=dict, cli=False)
    data_options: object = opt(default_factory=dict, cli=False)

    # --- batch norm and many processes (torchrun) ----------------------------------
    sync_bn: bool = opt(False, "under torchrun: BatchNorm statistics over the global batch (SyncBatchNorm; "
                               "SimCLR sec. B.1 'global BN')")

    # --- monitoring, i/o -----------------------------------------------------------
    knn: KnnConfig = opt(default_factory=KnnConfig, help="kNN monitor")
    log_every: int = opt(10, "steps between metric lines in metrics.jsonl")
    tensorboard: bool = opt(False, "also write TensorBoard logs to RUN/tensorboard (loss, lr, kNN, throughput); "
                                   "needs the tensorboard extra; metrics.jsonl stays the source of truth")
    num_workers: int = opt(0, "loader processes for data read item by item (0: in the training process)")
    device: str = opt("auto", "auto (cuda when present), cpu, cuda, cuda:1 ...")
    seed: int = opt(0, "seed of every random choice (data order, augmentations, initial weights)")
    out: str | None = opt(None, "run folder; default runs/<method>-<date-time>")
    resume: bool = opt(False, "continue from the newest good checkpoint in --out (or the newest "
                              "runs/<method>-* folder)")
    checkpoint_every: int = opt(0, "also checkpoint every N steps inside an epoch (0: by time and at epoch ends)")
    checkpoint_minutes: float = opt(10.0, "also checkpoint inside an epoch when this many minutes have passed "
                                          "since the last checkpoint (0: off)")
    skip_nonfinite: bool = opt(False, "skip a step whose loss is NaN/Inf (counted in the log) instead of stopping")
    max_steps: int | None = opt(None, "stop after this many steps in total (smoke runs)")
    train_limit: int | None = opt(None, "use only N training items, a fixed random draw (smoke runs, CPU-sized "
                                        "runs on large data)")

    # Derived once by resolve(); never set by hand.
    lr_scaled: float | None = opt(None, cli=False)
    modality: str | None = opt(None, cli=False)
    world_size: int = opt(1, cli=False)

    def resolve(self, data, *, world_size: int = 1, precision: str | None = None, out: str | None = None,
                resume: bool | None = None) -> "PretrainConfig":
        """Every default filled from the method, the optimizer, the data (its modality) and the processes.

        precision, out, resume: what the run decided from the hardware and the run folder; they
        replace the fields of the same name (a resolved config is final)."""
        if self.optimizer is not None:
            check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("precision", self.precision, PRECISIONS)
        for flag, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size)):
            if value is not None and value < 1:
                raise ContrastiveError(f"{flag} must be at least 1, got {value}")
        if self.batch_size is not None and self.batch_size % world_size:
            raise ContrastiveError(f"--batch-size {self.batch_size} is the global batch and must divide evenly over "
                                   f"{world_size} processes; pass a multiple of {world_size}")
        n_train = len(data.train) if self.train_limit is None else min(len(data.train), self.train_limit)
        batch_size = self.batch_size or default_batch_size(n_train, world_size)
        modality = modality_of(data)
        method = method_module(self.method)
        backbone = self.backbone or modality.default_backbone(data, pick_device(self.device).type)
        optimizer = self.optimizer or modality.default_optimizer(backbone)
        lr = method.BASE_LR[optimizer] if self.lr is None else self.lr
        given = self.method_options
        if isinstance(given, dict):  # typed options over what the data wants, over the method's defaults
            given = {**options_for(self.method, {}).DATA_DEFAULTS.get(modality.name, {}), **given}
        options = resolve_options(self.method, given, world_size=world_size,
                                  local_batch=batch_size // world_size)
        return dataclasses.replace(
            self,
            backbone=backbone,
            optimizer=optimizer,
            batch_size=batch_size,
            batch_groups=modality.groups(data.train) is not None if self.batch_groups is None else self.batch_groups,
            lr=lr,
            lr_scaled=lr * batch_size / 256,
            weight_decay=WEIGHT_DECAY[optimizer] if self.weight_decay is None else self.weight_decay,
            warmup_epochs=min(10.0, 0.1 * self.epochs) if self.warmup_epochs is None else self.warmup_epochs,
            method_options=options,
            data_options=modality.resolve(modality.options(self.data_options), data),
            modality=modality.name,
            world_size=world_size,
            precision=precision or self.precision,
            out=self.out if out is None else out,
            resume=self.resume if resume is None else resume,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PretrainConfig":
        """The config a file saved (`to_dict`, or a checkpoint's "config"); a resolved one (it names its
        modality) gets its method's and its modality's Options back from their dicts."""
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if isinstance(d.get("knn"), dict):
            d["knn"] = KnnConfig(**d["knn"])
        if d.get("modality") is not None:
            d["method_options"] = method_module(d["method"]).Options.from_dict(d.get("method_options", {}))
            d["data_options"] = saved_options(modality_named(d["modality"]).Options, d.get("data_options", {}))
        return cls(**d)


def saved_options(cls: type, saved: dict):
    """`cls` (an Options dataclass) from a saved dict; keys that are no longer options are left out."""
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in saved.items() if k in known})


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ContrastiveError(f"unknown {name} '{value}'; choose one of: {', '.join(choices)}")
