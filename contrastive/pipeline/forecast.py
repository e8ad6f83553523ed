"""The pipeline's wall-time forecast, printed after the first pretraining epoch.

Costs are counted in item passes (forward + backward of one item) and priced at the first epoch's
rate: pretraining an item is two passes (two views); a classifier step on an item is one (its step
count comes from the budget itself, `Budget.steps`); distillation one and a half (the teacher's forward
is about half a pass); consistency training (semi) one and a half (the strong view's pass, the weak view's forward, the
labelled items' weak pass); reading an item without gradients (validation, test,
features) a third. The
choices train every candidate of their grids on each fraction's first draw; the other draws train one
model a column.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

from contrastive.callbacks import Callback
from contrastive.evaluate.fit import Budget
from contrastive.pipeline.config import PipelineConfig, draws_for

FORWARD = 1 / 3  # an item read without gradients, in passes
DISTILL = 1.5  # an item of a distillation step: the student's pass and the teacher's forward
SEMI = 1.5  # an item of a consistency step: the strong view's pass, the weak view's forward, a labelled item's pass
NETWORK_COLUMNS = 5  # supervised, linear, finetune, semi, distill: each read on validation and on test, every draw


@dataclass(frozen=True)
class Sizes:
    train: int
    val: int
    test: int
    semi: bool = True  # the modality has the views consistency training reads


def validation_read(cfg: PipelineConfig, labeled: int, val: int) -> int:
    """The validation items a fraction's choices read (contrastive.pipeline.stages.fraction_validation)."""
    return val if cfg.validation_labels == "all" else min(val, labeled)


def fit_passes(budget: Budget, n_items: int) -> float:
    """Passes of one fit over `n_items` (its steps times its batch), without reading validation."""
    return budget.steps(n_items) * budget.batch(n_items)


def fraction_passes(cfg: PipelineConfig, fraction: float, draws: int, sizes: Sizes) -> float:
    """Every fit of one label fraction, the grids on its first draw, and the reads of validation and test."""
    labeled = max(1, round(fraction * sizes.train))
    supervised = len(cfg.supervised_lrs) + draws - 1
    finetune = len(cfg.finetune_lrs) + draws - 1
    distill = len(cfg.distill_temperatures) * len(cfg.distill_lr_factors) + draws - 1
    semi = draws if sizes.semi else 0
    semi_items = sizes.train + labeled * math.ceil(sizes.train / (cfg.semi_ratio * labeled))
    student = cfg.distill  # a student of another backbone trains from random init for student_epochs
    if cfg.student is not None and cfg.student != cfg.pretrain.backbone:
        student = dataclasses.replace(cfg.distill, epochs=cfg.student_epochs)
    passes = (supervised * fit_passes(cfg.supervised, labeled) + finetune * fit_passes(cfg.finetune, labeled)
              + distill * DISTILL * fit_passes(student, sizes.train)
              + semi * SEMI * fit_passes(cfg.semi, semi_items))
    scored = supervised + finetune + 2 * distill + 2 * semi + draws * NETWORK_COLUMNS  # models read on validation
    val = validation_read(cfg, labeled, sizes.val)
    return passes + FORWARD * (scored * val + draws * NETWORK_COLUMNS * sizes.test + draws * labeled)


# The fits after pretraining cost more per item pass than a pretraining epoch does (small batches, a step's fixed
# cost, the views of two networks): on the digits the label fractions took 1.22 and 1.25 times what the pretraining
# epochs' mean price said (two default runs of 2026-12-04: 530 s against 433 s, 470 s against 377 s).
FIT_OVERHEAD = 1.25


def pipeline_seconds(cfg: PipelineConfig, sizes: Sizes, epoch_seconds: float, epochs_left: int) -> tuple[float, float]:
    """(pretraining seconds from its first epoch on, everything after) at the rate of one pretraining epoch that
    took epoch_seconds."""
    per_pass = FIT_OVERHEAD * epoch_seconds / max(1, sizes.train * 2)  # two views an item
    passes = FORWARD * (2 * sizes.train + sizes.val + sizes.test)  # the frozen features, the test kNN
    for i, fraction in enumerate(cfg.fractions):
        draws = 1 if fraction >= 1 else draws_for(cfg, i)
        passes += fraction_passes(cfg, fraction, draws, sizes)
    return epoch_seconds * (1 + epochs_left), passes * per_pass


class WallTimeForecast(Callback):
    """After the first pretraining epoch, logs the expected wall time of the whole pipeline."""

    def __init__(self, cfg: PipelineConfig, n_train: int, n_val: int, n_test: int, log, started: float | None = None,
                 semi: bool = True):
        """started: time.time() when the pipeline began (what ran before the first epoch is counted as it took);
        semi: whether the semi column runs (the modality's views allow it)."""
        self.cfg, self.sizes, self.log = cfg, Sizes(n_train, n_val, n_test, semi), log
        self.t0, self.first = None, None
        self.started, self.expected = started, None

    def on_start(self, run) -> None:
        self.t0, self.first = time.time(), run.epoch

    def on_epoch_end(self, run, epoch: int, record: dict) -> None:
        if epoch != self.first or self.t0 is None:
            return
        now = time.time()
        pretraining, rest = pipeline_seconds(self.cfg, self.sizes, now - self.t0, run.cfg.epochs - epoch - 1)
        before = self.t0 - (self.started or self.t0)  # the data, the splits, the run's setup and its first kNN
        pretraining += before
        self.expected = pretraining + rest
        self.log(f"expected wall time of the whole pipeline: about {self.expected / 60:.1f} min (pretraining "
                 f"{pretraining / 60:.1f} min, then the label fractions; priced at the first epoch)")
