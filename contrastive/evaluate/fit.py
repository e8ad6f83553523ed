"""The one supervised loop: every classifier (fine-tuned, baseline, distilled student) is trained here.

The three uses differ only in the model they hand `fit_classifier` and in its `loss_fn`.
Batches come from the one batch producer (contrastive.batches), as in pretraining.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from contrastive.batches import batches
from contrastive.config import PRECISIONS
from contrastive.device import resolve_precision
from contrastive.errors import ContrastiveError
from contrastive.evaluate.features import extract_features
from contrastive.fields import opt
from contrastive.optim import LR_PER_SGD, build_optimizer, build_scheduler, preferred_optimizer


@dataclass(frozen=True)
class Budget:
    """How long and how hard `fit_classifier` trains. The fields are its keyword arguments.

    Defaults are sized for small_cnn on the embedded digits with 2 CPU cores; a ResNet on
    CIFAR-10 wants more epochs (SimCLRv2 sec. 3: 60 epochs at 1% labels, 30 at 10%).
    """

    epochs: int = opt(30, "passes over the labelled items")
    min_steps: int = opt(200, "steps at least: 40 labelled digits are one batch an epoch, 30 steps would not fit them")
    batch_size: int = opt(256, "items per step, capped at the size of the training set")
    # On the digits with a random-init small_cnn, 0.1 >= 0.05 >> 0.02 at 40 and at 400 labels (one seed each).
    lr: float = opt(0.1, "SGD peak lr of the cosine schedule, not scaled with the batch size")
    weight_decay: float = opt(5e-4, "the SGD value of pretraining; never on BN or bias")
    augment: bool = opt(True, "the modality's light training views (images: random crop, and flip where it "
                              "applies; SimCLRv2 sec. 3 fine-tunes with only these)")
    precision: str = opt("auto", "bf16 autocast where native (see contrastive.device), else fp32",
                         choices=PRECISIONS)

    def kwargs(self) -> dict:
        return dataclasses.asdict(self)

    def batch(self, n_items: int) -> int:
        """Items per step over `n_items`: the batches of an epoch made nearly equal in size (4,000 items at
        batch_size 256: 16 batches of 250), so no batch is a lone item that BatchNorm cannot normalise."""
        return math.ceil(n_items / batches_per_epoch(n_items, self.batch_size))

    def steps(self, n_items: int) -> int:
        """Optimizer steps of a fit over `n_items`: max(epochs * batches an epoch, min_steps)."""
        return max(self.epochs * batches_per_epoch(n_items, self.batch_size), self.min_steps)


def batches_per_epoch(n_items: int, batch_size: int) -> int:
    return math.ceil(n_items / min(batch_size, n_items))


# Fine-tuning and the supervised baseline get the same steps; each its own best lr. A pretrained
# network is fine-tuned gently: on the digits at 1% labels (3 label draws, 30-epoch SimCLR
# encoder) lr 0.03 beat 0.1 every time (0.772/0.853/0.778 against 0.751/0.824/0.701), while
# from random init 0.1 is best (above).
SUPERVISED = Budget()
FINETUNE = Budget(lr=0.03)
DISTILL = Budget(epochs=10, min_steps=0)  # 10 passes over all training items (4,000 digits: 160 steps)
# Consistency training (contrastive.evaluate.semi) from the fine-tuned network, 4 passes over the training items at
# FixMatch's lr of 0.03 (Sohn et al. 2020). On the digits' validation split at 1% (2 draws, fine-tuned 0.945;
# benchmarks/results/semi_ablation.jsonl, threshold 0.95 unless named): lr 0.03 for 3 / 6 / 10 passes 0.951 / 0.959 /
# 0.974, lr 0.1 for 6 passes 0.921, lr 0.01 for 15 passes 0.973; batches of 64 or 128 at lr 0.03 were worse (draw 1:
# 0.875 / 0.925); threshold 0.8 for 5 / 8 passes 0.969 / 0.970. Each pass costs about one pretraining epoch: 4 passes
# keep the default pipeline within 10 minutes on 2 cores (with 5 it took 10.2; BENCHMARKS.md).
SEMI = Budget(epochs=4, min_steps=0, lr=0.03)


def evaluate_accuracy(model: nn.Module, test, reader, device: torch.device | str = "cpu",
                      batch_size: int = 512) -> float:
    """Top-1 accuracy in [0, 1] of `model`'s logits on `test`, in eval mode (the mode is restored)."""
    logits, labels = extract_features(model, test, reader, device, batch_size)  # (N, C), (N,)
    return (logits.argmax(dim=1) == labels).float().mean().item()


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    del inputs
    return F.cross_entropy(logits, labels)


def pass_seed(seed: int, epoch: int) -> int:
    """The order and the augmentations of one pass over the labelled items."""
    return seed * 7919 + epoch


def fit_classifier(model: nn.Module, train, test, reader, *, loss_fn=None, epochs: int, batch_size: int = 256,
                   lr: float, weight_decay: float = 5e-4, device: torch.device | str = "cpu", seed: int = 0,
                   min_steps: int = 0, augment: bool = True, num_workers: int = 0, precision: str = "fp32",
                   views=None, history: list | None = None, log=None) -> float | None:
    """Train `model` on `train`; return its test accuracy (None without a test set).

    SGD with momentum 0.9 and a cosine schedule from `lr` to 0 (no warm-up), weight decay on weights only; a
    network whose encoder asks for AdamW (the hashed n-gram bag) gets AdamW at LR_PER_SGD of `lr`
    (contrastive.optim.preferred_optimizer).
    Steps: `Budget.steps`, cycling through the data as often as needed, in batches of nearly equal size
    (`Budget.batch`), so no batch is a lone item that BatchNorm cannot normalise. `loss_fn(logits, labels,
    inputs) -> loss` defaults to cross-entropy; `inputs` is the augmented batch on the device. `views`
    (contrastive.batches.Views) replaces the modality's classifier views (`augment`): the model trains on the
    first view of each item and `loss_fn` gets the last (with one view, the same tensor; distillation passes
    its teacher's view, consistency training the weak view). `history`, when given, gets each pass's mean
    loss (the pipeline names a loss that stopped falling). The order of items and the augmentations derive
    from `seed`; the caller's random state is left as it was. `reader` (contrastive.modality.Reader) says how
    the model reads the items. The model is left on `device`, in eval mode.
    """
    if len(train) == 0:
        raise ContrastiveError("no training items to fit the classifier on; check the label fraction and the data")
    device = torch.device(device)
    precision = resolve_precision(precision, device)
    loss_fn = loss_fn or cross_entropy
    budget = Budget(epochs=epochs, min_steps=min_steps, batch_size=batch_size, lr=lr)
    batch_size, total_steps = budget.batch(len(train)), budget.steps(len(train))
    model.to(device)
    name = preferred_optimizer(model)
    optimizer = build_optimizer(name, model, lr * LR_PER_SGD[name], weight_decay, momentum=0.9)
    scheduler = build_scheduler(optimizer, total_steps, warmup_steps=0)
    views = views or reader.classifier_views(train, augment)
    use_bf16 = precision == "bf16"
    step, passes = 0, 0
    with torch.random.fork_rng(devices=[]):  # per-item transforms draw from the global cpu stream
        torch.manual_seed(seed)
        model.train()
        while step < total_steps:
            running, seen = 0.0, 0
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(pass_seed(seed, passes)))
            for inputs, labels in batches(train, views, order, batch_size, device,
                                          epoch_seed=pass_seed(seed, passes), num_workers=num_workers):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    loss = loss_fn(model(inputs[0]), labels, inputs[-1])
                if not torch.isfinite(loss):
                    raise ContrastiveError(f"classifier loss became {loss.item()} at step {step}; lower the lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                running += loss.item() * len(labels)
                seen += len(labels)
                if step >= total_steps:
                    break
            passes += 1
            if history is not None:
                history.append(running / max(seen, 1))
            if log is not None:
                log(f"pass {passes}  step {step}/{total_steps}  loss {running / max(seen, 1):.4f}")
    model.eval()
    if test is None:
        return None
    return evaluate_accuracy(model, test, reader, device)
