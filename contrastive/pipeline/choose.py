"""The choice stage: every choice of a label fraction, made on validation with its first draw's fits.

`choose` returns a `Choices`; the fit stage then applies it to every draw alike. Each grid is scored by one
validation measure (Stage.val_score): accuracy, or the positive class's PR-AUC where the task names one (code's
vulnerable task). A tie goes to the higher log-likelihood, then to the first given
(contrastive.protocol.best_on_validation).
"""

from __future__ import annotations

from typing import Callable

from contrastive.errors import ContrastiveError
from contrastive.pipeline.config import PipelineConfig
from contrastive.pipeline.fits import DrawFits
from contrastive.pipeline.results import Choices
from contrastive.protocol import best_on_validation


def choose(cfg: PipelineConfig, fits: DrawFits, log) -> Choices:
    """Learning rates of the baseline and of fine-tuning, the distillation teacher, then its temperature and
    the student's lr factor, each on top of the choices before it."""
    score = fits.stage.val_score
    supervised_lr, supervised_scores = choose_lr(lambda lr: score(fits.supervised(lr)), cfg.supervised_lrs, log,
                                                 "supervised lr")
    finetune_lr, finetune_scores = choose_lr(lambda lr: score(fits.finetuned(lr)), cfg.finetune_lrs, log,
                                             "finetune lr")
    teacher, teacher_scores = choose_teacher(cfg.distill_teacher, lambda name: score(fits.teacher(name, finetune_lr)),
                                             log, fits.stage.teachers)
    (temperature, factor), distill_scores = choose_distillation(
        lambda t, f: score(fits.trained_student(teacher, finetune_lr, t, f)), cfg.distill_temperatures,
        cfg.distill_lr_factors, log)
    return Choices(supervised_lr, supervised_scores, finetune_lr, finetune_scores, teacher, teacher_scores,
                   temperature, factor, distill_scores)


def widened(grid: tuple[float, ...], best: float, factor: float = 3.0) -> float | None:
    """The next learning rate to try when `best` sits at an edge of the sorted grid, else None."""
    ordered = sorted(grid)
    if len(ordered) < 2:
        return None
    if best == ordered[0]:
        return ordered[0] / factor
    if best == ordered[-1]:
        return ordered[-1] * factor
    return None


def choose_lr(score: Callable[[float], float], grid: tuple[float, ...], log, name: str,
              max_extra: int = 2) -> tuple[float, dict[str, float]]:
    """(best lr, {lr: validation accuracy}): each lr of the grid scored on validation; while the best lies
    at an edge the grid is widened (at most max_extra times)."""
    scores = {lr: score(lr) for lr in grid}
    for _ in range(max_extra):
        nxt = widened(tuple(scores), best_on_validation(scores))
        if nxt is None:
            break
        scores[nxt] = score(nxt)
    best = best_on_validation(scores)
    log(f"  {name} on validation: " + "  ".join(f"{lr:g}: {a:.4f}" for lr, a in sorted(scores.items()))
        + f"  -> {best:g}")
    return best, {str(k): v for k, v in sorted(scores.items())}


def choose_teacher(setting: str, score: Callable[[str], float], log,
                   candidates: tuple[str, ...]) -> tuple[str, dict[str, float] | None]:
    """(the distillation teacher, every candidate's validation accuracy): a teacher as given (nothing
    scored), or with "auto" the best of `candidates` on validation (the first on a tie)."""
    if setting != "auto":
        if setting not in candidates:
            raise ContrastiveError(f"--distill-teacher {setting} is not available on this data; choose one of "
                                   f"{', '.join(candidates)} or auto")
        return setting, None
    scores = {name: score(name) for name in candidates}
    best = best_on_validation(scores)
    log("  distillation teacher on validation: " + "  ".join(f"{n}: {v:.4f}" for n, v in scores.items())
        + f"  -> {best}")
    return best, scores


def choose_distillation(score: Callable[[float, float], float], temperatures: tuple[float, ...],
                        lr_factors: tuple[float, ...], log) -> tuple[tuple[float, float], dict[str, float]]:
    """((T, lr factor), {"T t, lr x f": validation accuracy}): every pair of the two grids distilled and
    scored on validation; the first best pair wins a tie."""
    scores = {(t, f): score(t, f) for t in temperatures for f in lr_factors}
    best = best_on_validation(scores)
    named = {f"T {t:g}, lr x{f:g}": v for (t, f), v in scores.items()}
    log("  distillation on validation: " + "  ".join(f"{n}: {v:.4f}" for n, v in named.items())
        + f"  -> T {best[0]:g}, lr x{best[1]:g}")
    return best, named
