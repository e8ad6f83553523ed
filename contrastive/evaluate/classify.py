"""Classifiers on top of a pretrained encoder: linear probe, fine-tuning, distillation.

The SimCLRv2 recipe (Chen et al. 2020, arXiv:2006.10029) in three calls:

    pre = load_pretrained("runs/simclr-.../checkpoint-epoch0030.pt")
    teacher, acc = finetune(pre, labeled, test, num_classes, size, channels)      # 1% / 10% of labels
    student, acc = distill(teacher, random_classifier(...), unlabeled, test, size, channels)

plus the two references a result needs: `linear_probe` (frozen features, the standard
protocol) and `supervised_baseline` (the same network from random init, the same budget).
Every trained network goes through the one loop, `fit_classifier`; the three uses differ
only in the model they hand it and in its `loss_fn`. Nothing here knows which method
pretrained the encoder: a checkpoint is read as an encoder plus, for SimCLR, the first
layer of its projection head.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from contrastive.augment import eval_transform, train_transform
from contrastive.backbones import build_backbone, feature_dim
from contrastive.batch_augment import BatchAugment, batch_view
from contrastive.checkpoint import load_checkpoint
from contrastive.data import ImageSet, Transformed
from contrastive.device import resolve_precision
from contrastive.errors import ContrastiveError
from contrastive.evaluate.features import extract_features
from contrastive.heads import simclr_head
from contrastive.losses import distillation_loss
from contrastive.optim import build_optimizer, build_scheduler


# --- budgets ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Budget:
    """How long and how hard `fit_classifier` trains. The fields are its keyword arguments.

    Defaults are sized for small_cnn on the embedded digits with 2 CPU cores; a ResNet on
    CIFAR-10 wants more epochs (SimCLRv2 sec. 3: 60 epochs at 1% labels, 30 at 10%).
    """

    epochs: int = 30  # passes over the labelled images
    min_steps: int = 200  # 40 labelled digits are one batch an epoch: 30 steps would not fit them
    batch_size: int = 256  # capped at the size of the training set
    # SGD peak lr of the cosine schedule, not scaled with the batch size. On the digits with a
    # random-init small_cnn, 0.1 >= 0.05 >> 0.02 at 40 and at 400 labels (one seed each).
    lr: float = 0.1
    weight_decay: float = 5e-4  # the SGD value of the pretraining config; never on BN or bias
    augment: bool = True  # random crop (and flip where it applies): SimCLRv2 sec. 3 uses only these
    precision: str = "auto"  # bf16 autocast where native (see contrastive.device), else fp32

    def kwargs(self) -> dict:
        return dataclasses.asdict(self)


# Fine-tuning and the supervised baseline get the same steps; each its own best lr. A pretrained
# network is fine-tuned gently: on the digits at 1% labels (3 label draws, 30-epoch SimCLR
# encoder) lr 0.03 beat 0.1 every time (0.772/0.853/0.778 against 0.751/0.824/0.701), while
# from random init 0.1 is best (above).
SUPERVISED = Budget()
FINETUNE = Budget(lr=0.03)
DISTILL = Budget(epochs=10, min_steps=0)  # 10 passes over all training images (4,000 digits: 160 steps)
PROBE_ITERATIONS = 100  # L-BFGS iterations of the linear probe, each one pass over the cached features


# --- reading a pretraining checkpoint ---------------------------------------------------

@dataclass
class Pretrained:
    encoder: nn.Module  # the backbone with pretrained weights (keys "encoder.*" of the checkpoint)
    feat_dim: int
    head: nn.Module | None  # SimCLR: the first head layer, equal to simclr_head(...)[:1]; else None
    config: dict  # the run's resolved PretrainConfig as a dict
    data: dict  # name, channels, image_size, num_classes, classes of the pretraining data
    path: str

    @property
    def head_dim(self) -> int | None:
        return out_features(self.head) if self.head is not None else None


def load_pretrained(path) -> Pretrained:
    """The encoder (and SimCLR's first head layer) of a pretraining checkpoint, on the cpu.

    Every failure is a one-line ContrastiveError naming the file: missing or corrupt (from
    load_checkpoint), not a pretraining checkpoint, or weights that do not fit the backbone.
    """
    ckpt = load_checkpoint(path)
    config, data, model = ckpt["config"], ckpt.get("data"), ckpt["model"]
    encoder_state = sub_state(model, "encoder.")
    if (not isinstance(data, dict) or "channels" not in data or "backbone" not in config
            or "method" not in config or not encoder_state):
        raise ContrastiveError(f"{path} is not a pretraining checkpoint (no encoder weights, or no backbone and data "
                               f"description); pass a checkpoint-epoch*.pt written by pretraining")
    backbone = config["backbone"]
    encoder, feat_dim = build_backbone(backbone, data["channels"], bool(config.get("cifar_stem")))
    load_weights(encoder, encoder_state, path, f"backbone {backbone}")
    head = None
    # SimCLRv2 (sec. 2) fine-tunes from the first layer of its 3-layer head. With a one-layer
    # head that layer is the output projection, not a hidden layer, so there is nothing to keep.
    if config["method"] == "simclr" and (config.get("head_layers") or 3) >= 2:
        hidden = config.get("proj_hidden") or feat_dim  # build_method's rule
        head = simclr_head(feat_dim, hidden, config.get("proj_dim") or 128, config.get("head_layers") or 3)[:1]
        load_weights(head, sub_state(model, "projector.", keep="0."), path, f"the first layer of a {hidden}-wide head")
    encoder.eval()
    if head is not None:
        head.eval()
    return Pretrained(encoder, feat_dim, head, config, data, str(path))


def check_compatible(pre: Pretrained, channels: int, data_name: str | None = None) -> None:
    """ContrastiveError when the data's channel count differs from the pretraining data's."""
    trained = pre.data["channels"]
    if channels != trained:
        now = f" ({data_name})" if data_name else ""
        raise ContrastiveError(
            f"checkpoint {pre.path} was trained on {trained}-channel images ({pre.data.get('name')}), the data{now} has "
            f"{channels}; pass the --data it was trained on")


def sub_state(state: dict, prefix: str, keep: str = "") -> dict:
    """Entries of `state` under `prefix`, with the prefix removed; only those then starting with `keep`."""
    out = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return {k: v for k, v in out.items() if k.startswith(keep)}


def load_weights(module: nn.Module, state: dict, path, what: str) -> None:
    """Strict load_state_dict whose failure is a one-line ContrastiveError listing the first mismatches."""
    expected = module.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [f"{k} is {tuple(state[k].shape)} in the checkpoint, {tuple(v.shape)} here"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ContrastiveError(
            f"checkpoint {path} does not match {what}: {'; '.join(problems[:3])}{more}; it was written by another "
            f"version of the network: use the code that wrote it, or pretrain again")
    module.load_state_dict(state)


def out_features(module: nn.Module) -> int:
    """The width of a head's output: its last Linear layer's."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("cannot tell the output width of a neck without a Linear layer; pass neck_dim")
    return linears[-1].out_features


# --- the classifier --------------------------------------------------------------------------

class Classifier(nn.Module):
    """encoder -> optional neck (e.g. SimCLRv2's first head layer) -> linear layer."""

    def __init__(self, encoder: nn.Module, feat_dim: int, num_classes: int, neck: nn.Module | None = None,
                 neck_dim: int | None = None):
        super().__init__()
        self.encoder = encoder
        self.neck = neck
        in_dim = feat_dim if neck is None else (neck_dim or out_features(neck))
        self.fc = nn.Linear(in_dim, num_classes)
        # Small random weights and zero bias: every class starts equally likely (MoCo's
        # main_lincls.py initialises its linear layer the same way).
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)  # (N, feat_dim)
        if self.neck is not None:
            h = self.neck(h)  # (N, neck_dim)
        return self.fc(h)  # (N, num_classes) logits


def classifier_from(pre: Pretrained, num_classes: int, from_head_layer: bool = True) -> Classifier:
    """A Classifier on deep copies of the pretrained encoder (and head layer): `pre` stays untouched.

    from_head_layer: SimCLRv2 (sec. 3) fine-tunes from the first head layer with 1% / 10% of
    the labels and from the encoder's output (the head's input) with all of them.
    """
    neck = copy.deepcopy(pre.head) if from_head_layer and pre.head is not None else None
    return Classifier(copy.deepcopy(pre.encoder), pre.feat_dim, num_classes, neck)


def random_classifier(backbone: str, channels: int, cifar_stem: bool, num_classes: int, seed: int = 0) -> Classifier:
    """A randomly initialised backbone + linear layer; the seed fixes the initial weights."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream where it was
        torch.manual_seed(seed)
        encoder, feat_dim = build_backbone(backbone, channels, cifar_stem)
        return Classifier(encoder, feat_dim, num_classes)


# --- evaluation ---------------------------------------------------------------------------

def evaluate_accuracy(model: nn.Module, test: ImageSet, image_size: int, channels: int,
                      device: torch.device | str = "cpu", batch_size: int = 512) -> float:
    """Top-1 accuracy in [0, 1] of `model`'s logits on `test`, in eval mode (the mode is restored)."""
    logits, labels = extract_features(model, test, image_size, channels, device, batch_size)  # (N, C), (N,)
    return (logits.argmax(dim=1) == labels).float().mean().item()


def linear_probe(encoder: nn.Module, train: ImageSet, test: ImageSet, num_classes: int, image_size: int,
                 channels: int, *, device: torch.device | str = "cpu", epochs: int = PROBE_ITERATIONS,
                 lr: float = 1.0, weight_decay: float = 1e-4, seed: int = 0) -> float:
    """Test top-1 of multinomial logistic regression on frozen features, a fraction in [0, 1].

    Features are computed once, in eval mode and without gradients, so the encoder (its BN
    statistics included) is left exactly as it was. They are standardised with the
    training set's per-dimension mean and std: the classifier then sees every dimension on
    one scale whatever the encoder's output range, and the same penalty means the same
    thing for every encoder.

    The fit is full-batch L-BFGS (`epochs` iterations, each about one pass over the cached
    features) with a strong-Wolfe line search, from zero weights. The problem is convex
    and small (N x D features, D x C weights), so this reaches the optimum in a few dozen
    passes with no learning rate or batch size to tune, and it is deterministic: `seed` is
    accepted for a uniform signature but nothing is drawn. weight_decay is the L2 penalty
    (weight_decay / 2) * ||W||^2 on the weights, not on the bias.
    """
    del seed  # nothing random: zero init, full batch
    if not train.has_labels or not test.has_labels:
        raise ContrastiveError("the linear probe needs labelled train and test images; this data has no labels")
    x_train, y_train = extract_features(encoder, train, image_size, channels, device)  # (N, D), (N,) on cpu
    x_test, y_test = extract_features(encoder, test, image_size, channels, device)
    mean, std = x_train.mean(dim=0), x_train.std(dim=0).clamp_min(1e-6)  # (D,) each
    x_train, x_test = ((x - mean) / std for x in (x_train, x_test))
    x_train, y_train = x_train.to(device), y_train.to(device)
    linear = nn.Linear(x_train.shape[1], num_classes).to(device)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=lr, max_iter=epochs, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(x_train), y_train) + 0.5 * weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        predictions = linear(x_test.to(device)).argmax(dim=1).cpu()
    return (predictions == y_test).float().mean().item()


# --- the one supervised loop -------------------------------------------------------------------

def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    del images
    return F.cross_entropy(logits, labels)


def classifier_batches(train: ImageSet, image_size: int, channels: int, batch_size: int, augment: bool,
                       device: torch.device, num_workers: int, seed: int):
    """A function of the pass number yielding (images (B, C, H, W) float on device, labels (B,)).

    Images decoded in memory at the training size take the fast path: whole batches sliced,
    moved and augmented as tensors on the device (the same crop/flip recipe as
    augment.train_transform). Anything else goes through a DataLoader, image by image.
    """
    if train.images is not None and train.images.shape[-1] == image_size and train.images.shape[-2] == image_size:
        # min_scale=1 on a square image always falls back to the whole image: no augmentation.
        view = batch_view(train_transform(image_size, channels)) if augment else BatchAugment(
            image_size, channels, min_scale=1.0, flip=False, jitter=None, jitter_p=0.0, gray_p=0.0, blur_p=0.0,
            solarize_p=0.0)
        labels_all = train.labels if train.labels is not None else torch.full((len(train),), -1)

        def tensor_batches(epoch: int):
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed * 7919 + epoch))
            rng = torch.Generator(device).manual_seed(seed * 7919 + epoch)
            for idx in order.split(batch_size):
                images = train.images[idx].to(device, non_blocking=True)  # uint8 (B, C, H, W)
                yield view(images, rng), labels_all[idx].to(device, non_blocking=True)

        return tensor_batches
    transform = train_transform(image_size, channels) if augment else eval_transform(image_size, channels)
    loader = DataLoader(Transformed(train, transform), batch_size=batch_size, shuffle=True, drop_last=False,
                        num_workers=num_workers, generator=torch.Generator().manual_seed(seed),
                        pin_memory=device.type == "cuda")

    def loader_batches(epoch: int):
        for images, labels in loader:
            yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    return loader_batches


def fit_classifier(model: nn.Module, train: ImageSet, test: ImageSet | None, image_size: int, channels: int, *,
                   loss_fn=None, epochs: int, batch_size: int = 256, lr: float, weight_decay: float = 5e-4,
                   device: torch.device | str = "cpu", seed: int = 0, min_steps: int = 0, augment: bool = True,
                   num_workers: int = 0, precision: str = "fp32", log=None) -> float | None:
    """Train `model` on `train`; return its test accuracy (None without a test set).

    SGD with momentum 0.9 and a cosine schedule from `lr` to 0 (no warm-up), weight decay
    on weights only. Steps: max(epochs * ceil(N / batch_size), min_steps), cycling through
    the data as often as needed. The batches of an epoch are made nearly equal in size
    (4,000 images at batch_size 256: 16 batches of 250), so no batch is a lone image that
    BatchNorm cannot normalise. `loss_fn(logits, labels, images) -> loss` defaults to
    cross-entropy; `images` is the augmented batch on the device. The order of images and
    the augmentations derive from `seed`; the caller's random state is left as it was.
    The model is left on `device`, in eval mode.
    """
    if len(train) == 0:
        raise ContrastiveError("no training images to fit the classifier on; check the label fraction and the data")
    device = torch.device(device)
    precision = resolve_precision(precision, device)
    loss_fn = loss_fn or cross_entropy
    batches_per_epoch = math.ceil(len(train) / min(batch_size, len(train)))
    batch_size = math.ceil(len(train) / batches_per_epoch)
    total_steps = max(epochs * batches_per_epoch, min_steps)
    model.to(device)
    optimizer = build_optimizer("sgd", model, lr, weight_decay, momentum=0.9)
    scheduler = build_scheduler(optimizer, total_steps, warmup_steps=0)
    batches = classifier_batches(train, image_size, channels, batch_size, augment, device, num_workers, seed)
    use_bf16 = precision == "bf16"
    step, passes = 0, 0
    with torch.random.fork_rng(devices=[]):  # torchvision's transforms draw from the global cpu stream
        torch.manual_seed(seed)
        model.train()
        while step < total_steps:
            running, seen = 0.0, 0
            for images, labels in batches(passes):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    loss = loss_fn(model(images), labels, images)
                if not torch.isfinite(loss):
                    raise ContrastiveError(f"classifier loss became {loss.item()} at step {step}; lower the lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                running += loss.item() * len(images)
                seen += len(images)
                if step >= total_steps:
                    break
            passes += 1
            if log is not None:
                log(f"pass {passes}  step {step}/{total_steps}  loss {running / max(seen, 1):.4f}")
    model.eval()
    if test is None:
        return None
    return evaluate_accuracy(model, test, image_size, channels, device)


# --- the three uses -----------------------------------------------------------------------------

def finetune(pretrained: Pretrained | nn.Module, labeled: ImageSet, test: ImageSet | None, num_classes: int,
             image_size: int, channels: int, *, feat_dim: int | None = None, from_head_layer: bool = True,
             budget: Budget = FINETUNE, device: torch.device | str = "cpu", seed: int = 0,
             log=None) -> tuple[Classifier, float | None]:
    """Fine-tune every layer of a copy of the pretrained network on the labelled images.

    `pretrained` is a Pretrained (its head layer becomes the neck when from_head_layer) or a
    bare encoder (feat_dim found by a forward pass unless given). Nothing passed in is changed.
    """
    if isinstance(pretrained, Pretrained):
        check_compatible(pretrained, channels)
        model = classifier_from(pretrained, num_classes, from_head_layer)
    else:
        encoder = copy.deepcopy(pretrained).cpu()
        feat_dim = feat_dim or feature_dim(encoder, channels, image_size)
        model = Classifier(encoder, feat_dim, num_classes)
    accuracy = fit_classifier(model, labeled, test, image_size, channels, device=device, seed=seed, log=log,
                              **budget.kwargs())
    return model, accuracy


def supervised_baseline(backbone: str, channels: int, cifar_stem: bool, num_classes: int, labeled: ImageSet,
                        test: ImageSet | None, image_size: int, *, budget: Budget = SUPERVISED,
                        device: torch.device | str = "cpu", seed: int = 0, log=None) -> tuple[Classifier, float | None]:
    """The same backbone + linear layer from random init, trained on the same labels with the same budget."""
    model = random_classifier(backbone, channels, cifar_stem, num_classes, seed)
    accuracy = fit_classifier(model, labeled, test, image_size, channels, device=device, seed=seed, log=log,
                              **budget.kwargs())
    return model, accuracy


def distillation_objective(teacher: nn.Module, temperature: float = 1.0, alpha: float = 0.0):
    """loss_fn for fit_classifier: SimCLRv2's distillation loss (eq. 2), optionally mixed with labels.

    The teacher sees the very batch the student sees (same crops) and is a constant. With
    alpha > 0 the loss is alpha * CE on the batch's labelled images (label -1: unlabelled)
    + (1 - alpha) * distillation on all of them. The paper's eq. 3 writes the same mix with
    its alpha on the distillation term: its alpha is 1 - alpha here. With alpha = 0 the
    labels are never looked at.
    """
    def loss_fn(student_logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(images)  # (B, C)
        loss = distillation_loss(student_logits, teacher_logits, temperature)
        if alpha == 0:
            return loss
        labelled = labels >= 0  # (B,)
        if not labelled.any():
            return (1 - alpha) * loss
        return alpha * F.cross_entropy(student_logits[labelled], labels[labelled]) + (1 - alpha) * loss

    return loss_fn


def distill(teacher: nn.Module, student: nn.Module, unlabeled: ImageSet, test: ImageSet | None, image_size: int,
            channels: int, *, temperature: float = 1.0, alpha: float = 0.0, labeled_mask=None,
            budget: Budget = DISTILL, device: torch.device | str = "cpu", seed: int = 0,
            log=None) -> tuple[nn.Module, float | None]:
    """Train `student` (in place) to match the fixed teacher's softened predictions on `unlabeled`.

    SimCLRv2 sec. 2, eq. 2: minimise -sum_y P_T(y|x; T) log P_S(y|x; T) over the training
    images; no label is used. temperature: the paper (sec. 3) uses T = 0.1 when student and
    teacher share one architecture (self-distillation) and T = 1.0 when a big teacher is
    distilled into a smaller student; 1.0 is the default here.
    alpha, labeled_mask: an optional label term, see distillation_objective. labeled_mask
    (bool (N,) or indices) says which images of `unlabeled` may have their label read.
    The teacher is moved to `device`, runs in eval mode, and gets its mode back at the end.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    images = unlabeled
    if alpha > 0:
        images = with_only_labels(unlabeled, labeled_mask)
    was_training = teacher.training
    teacher.to(device).eval()
    try:
        accuracy = fit_classifier(student, images, test, image_size, channels,
                                  loss_fn=distillation_objective(teacher, temperature, alpha), device=device,
                                  seed=seed, log=log, **budget.kwargs())
    finally:
        teacher.train(was_training)
    return student, accuracy


def with_only_labels(images: ImageSet, labeled_mask) -> ImageSet:
    """The same images (shared, not copied) whose labels outside `labeled_mask` are -1."""
    if labeled_mask is None or not images.has_labels:
        raise ContrastiveError("distillation with alpha > 0 needs labels and a labeled_mask saying which to use; "
                               "pass alpha=0 to distil from the teacher alone")
    mask = torch.as_tensor(labeled_mask)
    if mask.dtype != torch.bool:
        mask = torch.zeros(len(images), dtype=torch.bool).index_fill_(0, mask.long().reshape(-1), True)
    if mask.shape != (len(images),):
        raise ValueError(f"labeled_mask must have shape ({len(images)},), got {tuple(mask.shape)}")
    labels = torch.where(mask, images.labels, torch.full_like(images.labels, -1))
    return ImageSet(images=images.images, labels=labels, paths=images.paths, channels=images.channels)
