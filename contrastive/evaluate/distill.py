"""SimCLRv2 distillation (Chen et al. 2020, arXiv:2006.10029, sec. 2 eq. 2-3): a student learns a fixed
teacher's softened predictions on the unlabelled items."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from contrastive.batches import Views, paired
from contrastive.errors import ContrastiveError
from contrastive.evaluate.fit import DISTILL, Budget, fit_classifier
from contrastive.losses import distillation_loss


# What the student and the teacher read. SimCLRv2 (sec. 2.3) gives both the same augmented item: "same" + "light".
# Noisy Student (Xie et al. 2020, arXiv:1911.04252) and FixMatch (Sohn et al. 2020, arXiv:2001.07685) let the
# teacher label a clean (or weakly augmented) item and train the student on a strongly augmented one:
# "clean" + "strong".
STUDENT_VIEWS = ("light", "strong")
TEACHER_VIEWS = ("same", "clean")


def distill_views(reader, items, student: str = "light", teacher: str = "same", augment: bool = True) -> Views:
    """The student's view of each item first, then (teacher "clean") the untouched item for the teacher.
    augment False: the "light" student reads the untouched items too (a budget without augmentation)."""
    if student not in STUDENT_VIEWS or teacher not in TEACHER_VIEWS:
        raise ContrastiveError(f"distillation views: student one of {STUDENT_VIEWS}, teacher one of "
                               f"{TEACHER_VIEWS}; got {student!r}, {teacher!r}")
    views = reader.classifier_views(items, augment if student == "light" else "strong")
    return views if teacher == "same" else paired(views, reader.eval_views(items))


def distillation_objective(teacher: nn.Module, temperature: float = 1.0, alpha: float = 0.0):
    """loss_fn for fit_classifier: SimCLRv2's distillation loss (eq. 2), optionally mixed with labels.

    The teacher reads `inputs` (fit_classifier's last view: the student's own batch, or a clean
    copy of it, see distill_views) and is a constant. With
    alpha > 0 the loss is alpha * CE on the batch's labelled items (label -1: unlabelled)
    + (1 - alpha) * distillation on all of them. The paper's eq. 3 writes the same mix with
    its alpha on the distillation term: its alpha is 1 - alpha here. With alpha = 0 the
    labels are never looked at.
    """

    def loss_fn(student_logits: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(inputs)  # (B, C)
        loss = distillation_loss(student_logits, teacher_logits, temperature)
        if alpha == 0:
            return loss
        labelled = labels >= 0  # (B,)
        if not labelled.any():
            return (1 - alpha) * loss
        return alpha * F.cross_entropy(student_logits[labelled], labels[labelled]) + (1 - alpha) * loss

    return loss_fn


def distill(teacher: nn.Module, student: nn.Module, unlabeled, test, reader, *, temperature: float = 1.0,
            alpha: float = 0.0, labeled_mask=None, budget: Budget = DISTILL, device: torch.device | str = "cpu",
            student_views: str = "light", teacher_views: str = "same", seed: int = 0, history: list | None = None,
            log=None) -> tuple[nn.Module, float | None]:
    """Train `student` (in place) to match the fixed teacher's softened predictions on `unlabeled`.

    SimCLRv2 sec. 2, eq. 2: minimise -sum_y P_T(y|x; T) log P_S(y|x; T) over the training
    items; no label is used. temperature: the paper (sec. 3) uses T = 0.1 when student and
    teacher share one architecture (self-distillation) and T = 1.0 when a big teacher is
    distilled into a smaller student; 1.0 is the default here.
    alpha, labeled_mask: an optional label term, see distillation_objective. labeled_mask
    (bool (N,) or indices) says which items of `unlabeled` may have their label read.
    student_views, teacher_views: what each reads (see distill_views; the budget's `augment` says
    whether a "light" student's items are augmented). `reader` says how both networks read the
    items. The teacher is moved to `device`, runs in eval mode, and gets its mode back at the end.
    history: each pass's mean loss is appended (fit_classifier).
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    items = unlabeled
    if alpha > 0:
        items = with_only_labels(unlabeled, labeled_mask)
    was_training = teacher.training
    teacher.to(device).eval()
    try:
        accuracy = fit_classifier(student, items, test, reader,
                                  loss_fn=distillation_objective(teacher, temperature, alpha),
                                  views=distill_views(reader, items, student_views, teacher_views, budget.augment),
                                  device=device, seed=seed, history=history, log=log, **budget.kwargs())
    finally:
        teacher.train(was_training)
    return student, accuracy


def with_only_labels(items, labeled_mask):
    """The same items (shared, not copied) whose labels outside `labeled_mask` are -1."""
    if labeled_mask is None or not items.has_labels:
        raise ContrastiveError("distillation with alpha > 0 needs labels and a labeled_mask saying which to use; "
                               "pass alpha=0 to distil from the teacher alone")
    mask = torch.as_tensor(labeled_mask)
    if mask.dtype != torch.bool:
        mask = torch.zeros(len(items), dtype=torch.bool).index_fill_(0, mask.long().reshape(-1), True)
    if mask.shape != (len(items),):
        raise ValueError(f"labeled_mask must have shape ({len(items)},), got {tuple(mask.shape)}")
    return items.with_labels(torch.where(mask, items.labels, torch.full_like(items.labels, -1)))
