"""The pipeline's settings: `PipelineConfig`, every default once with where it comes from, and the --quick preset."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from contrastive.config import KnnConfig, PretrainConfig
from contrastive.errors import ContrastiveError
from contrastive.evaluate.distill import STUDENT_VIEWS, TEACHER_VIEWS
from contrastive.evaluate.fit import DISTILL, FINETUNE, SEMI, SUPERVISED, Budget
from contrastive.evaluate.semi import RATIO, WEIGHT
from contrastive.fields import opt

TEACHERS = ("finetune", "finetune+spreading", "semi", "semi+spreading")  # what may label the unlabelled items
DISTILL_TEACHERS = ("auto", *TEACHERS)
DISTILL_INITS = ("teacher", "pretrained", "random")
VALIDATION_LABELS = ("draw", "all")


@dataclass(frozen=True)
class PipelineConfig:
    # 30 epochs: on the digits' validation split SimCLR (small_cnn_grid, handwriting views, the data's default batch
    # of 64) read kNN 0.9675 after 15 epochs and 0.9700 after 30, its 1% probe 0.865 and 0.890 (5 draws); the
    # monitor every 5 epochs (it costs a pass over the data).
    pretrain: PretrainConfig = opt(default_factory=lambda: PretrainConfig(epochs=30, knn=KnnConfig(every=5)),
                                   cli=False)
    student: str | None = opt(None, "distillation student backbone; default the pretrained one (self-distillation, "
                                     "SimCLRv2 sec. 2.3); another one starts from random init and learns from the "
                                     "teacher alone on the light view it reads too (alpha 0), and the report gives "
                                     "its size and test-split time beside its teacher's")
    # A student of another backbone starts from random init: the `distill` command's 10 passes and half again.
    student_epochs: int = opt(15, "distillation passes for a --student of another backbone (from random init; the "
                                  "distill budget's epochs are for a student that starts as its teacher)",
                              positive=True)
    fractions: tuple[float, ...] = opt((0.01, 0.1), "label fractions: SimCLRv2's 1% and 10% (add 1.0 for all labels)")
    draws: tuple[int, ...] = opt((5, 3), "label draws per fraction, in the order of --fractions (the last number "
                                         "repeats; all labels are one draw); columns are mean ± sd over draws")
    validation: float = opt(0.1, "fraction of each class of the training data held out for every choice (learning "
                                 "rates, the kNN monitor); the test split is read once, at the end")
    supervised_lrs: tuple[float, ...] = opt((0.03, 0.1, 0.3), "learning-rate grid of the from-scratch baseline, "
                                                              "chosen on validation; widened while the best is at "
                                                              "an edge")
    # Fine-tuning lr on the digits' validation split at 1%: 0.0033 0.9225, 0.01 0.9225, 0.03 0.8975, 0.1 0.795.
    finetune_lrs: tuple[float, ...] = opt((0.003, 0.01, 0.03), "learning-rate grid of fine-tuning, chosen on "
                                                             "validation; widened while the best is at an edge")
    # The supervised baseline gets fine-tuning's steps (pass --finetune-epochs / --finetune-min-steps and the
    # baseline follows); the learning rates come from the grids above.
    # 100 steps at least (the finetune / supervised commands: 200): 5 + 3 label draws and the lr grids train 26
    # classifiers; the distillation student starts from a pretrained network, so 5 passes over the data, not 10. On
    # the digits' validation split at 1% (5 draws) 5 passes gave a student from the pretrained encoder 0.889 on
    # average, 3 passes 0.834 (teacher: 0.888).
    finetune: Budget = opt(default_factory=lambda: dataclasses.replace(FINETUNE, min_steps=100),
                           help="fine-tuning budget")
    supervised: Budget = opt(default_factory=lambda: dataclasses.replace(SUPERVISED, min_steps=100),
                             help="supervised-baseline budget")
    # 3 passes: the student starts as a copy of its teacher's network (distill_init "teacher"), and a student that ends
    # below that start on validation is not kept (contrastive.pipeline.guard). With 5 passes the default pipeline took
    # 11.0 min on 2 idle cores (1% student 0.9354, 10% 0.9700 on test; /tmp runs of 2026-12-04, BENCHMARKS.md).
    distill: Budget = opt(default_factory=lambda: dataclasses.replace(DISTILL, epochs=3),
                          help="distillation budget (its lr: fine-tuning's chosen one when the student starts from "
                               "the pretrained encoder)")
    # T on the digits' validation split at 1% (5 draws; averaged teacher, student from the fine-tuned network, strong
    # student views, clean teacher views; benchmarks/results/semi_ablation.jsonl): 1.0 0.9285, 0.3 0.943, 0.1 0.947.
    # Chosen per run: on CIFAR-10 (9,000 images, 10% labels) T 0.1 at fine-tuning's lr of 0.09 turned the student into
    # a constant (validation 0.105; its gradient is 1/T times a cross-entropy's), and multiplying the loss by T to
    # prevent that cost the digits 0.947 -> 0.9315.
    distill_temperatures: tuple[float, ...] = opt((0.1, 1.0), "softmax temperatures of SimCLRv2's distillation loss "
                                                              "(eq. 2; below 1 it sharpens the teacher's labels), "
                                                              "chosen on the first draw's validation accuracy")
    # On CIFAR-10 (9,000 images, 10% labels) a student at fine-tuning's lr of 0.09 fell from its 0.574 start to 0.32
    # on validation at T 1; on the digits the same lr is the best (x 0.1 at T 0.1 read 0.9315 against 0.947). A
    # student below its start is now caught on validation and its start kept (contrastive.pipeline.guard), so the
    # grid keeps x 1 alone: half the students trained for the choice (pass 1,0.1 to choose again).
    distill_lr_factors: tuple[float, ...] = opt((1.0,), "the student's lr as multiples of the lr fine-tuning "
                                                        "chose, chosen on validation with the temperature")
    distill_alpha: float = opt(0.5, "weight of the labelled cross-entropy in distillation (SimCLRv2 eq. 3; 0: the "
                                    "teacher's predictions alone; a --student of another backbone: 0)")
    # auto: on the digits the averaged teacher wins on validation (1%: 0.954 against 0.910); on CIFAR-10 at 9,000
    # images the spreading is weaker than fine-tuning (1%: 0.31 against 0.39), so the choice is the data's.
    distill_teacher: str = opt("auto", "what labels the unlabelled items: finetune (SimCLRv2: the fine-tuned "
                               "network), finetune+spreading (its average with label spreading on the pretrained "
                               "features, contrastive.evaluate.teachers) or auto (the better of the two on the "
                               "first draw's validation split)", choices=DISTILL_TEACHERS)
    # On the digits' validation split at 1% (5 draws, T 0.1; benchmarks/results/semi_ablation.jsonl): the averaged
    # teacher 0.947 against the fine-tuned one alone 0.921; strong student / clean teacher views 0.947 against
    # SimCLRv2's shared light view 0.9415; a student from the fine-tuned network 0.947, from the pretrained one 0.945.
    distill_student_views: str = opt("strong", "what the student reads: light (the classifier views) or strong "
                                              "(a pretraining view; Noisy Student); a --student of another "
                                              "backbone: light",
                                     choices=STUDENT_VIEWS)
    distill_teacher_views: str = opt("clean", "what the teacher reads: same (the student's view; SimCLRv2) or "
                                             "clean (the untouched item; Noisy Student, FixMatch); a --student of "
                                             "another backbone: same", choices=TEACHER_VIEWS)
    distill_init: str = opt("teacher", "the student's start: teacher (a copy of the network the teacher is built on: "
                                       "the fine-tuned one, or the semi one), pretrained (the pretrained encoder, a "
                                       "new linear layer) or random", choices=DISTILL_INITS)
    # FixMatch (Sohn et al. 2020, arXiv:2001.07685) from the fine-tuned network: the paper's unlabelled ratio 7 and
    # weight 1 (contrastive.evaluate.semi). Its threshold 0.95 is for 2^20 steps; in the pipeline's 5 passes (about 80
    # steps) fewer items pass it: on the digits' validation split at 1% (2 draws, 6 passes) 0.95 let 73% of the
    # unlabelled reads through and read 0.959, 0.8 let 89% through and read 0.969
    # (benchmarks/results/semi_ablation.jsonl).
    semi: Budget = opt(default_factory=lambda: SEMI, help="consistency-training (FixMatch) budget: epochs are passes "
                                                          "over every training item and the labelled copies")
    semi_threshold: float = opt(0.8, "FixMatch's confidence threshold (the paper's: 0.95): an unlabelled item "
                                      "trains the strong view only where the weak view's top probability reaches it")
    semi_ratio: int = opt(RATIO, "FixMatch's mu: unlabelled items per labelled one in a batch", positive=True)
    semi_weight: float = opt(WEIGHT, "FixMatch's lambda_u: the weight of the unlabelled term")
    validation_labels: str = opt("draw", "how much of the validation split a fraction's choices read: draw (at most "
                                         "as many items as the draw holds labels; Oliver et al. 2018) or all",
                                 choices=VALIDATION_LABELS)
    test_limit: int | None = opt(None, "score on N test items only, a fixed random draw (CPU-sized runs on large data)")
    tsne: bool = opt(True, "draw a t-SNE (and a UMAP, with the umap extra) of the test embeddings in the report")
    out: str | None = opt(None, "output folder; default runs/pipeline-<method>-<date-time>")


# --quick: the whole path with tiny budgets, about a minute on 2 CPU cores. Flags typed with --quick win.
QUICK = PipelineConfig(
    pretrain=PretrainConfig(epochs=2, train_limit=1000), draws=(2,),
    supervised_lrs=(0.1,), finetune_lrs=(0.03,), finetune=Budget(epochs=2, min_steps=40, lr=0.03),
    supervised=Budget(epochs=2, min_steps=40), distill=Budget(epochs=1, min_steps=0),
    semi=Budget(epochs=1, min_steps=0, lr=0.03), distill_temperatures=(0.1,),
    distill_lr_factors=(1.0,), tsne=False)


def matched_baseline(given: dict) -> dict:
    """Typed overrides with the supervised baseline given fine-tuning's epochs and min_steps where the user
    set those for fine-tuning only: the baseline must get the same steps to be a fair comparison."""
    finetune_, supervised = given.get("finetune", {}), dict(given.get("supervised", {}))
    for key in ("epochs", "min_steps"):
        if key in finetune_ and key not in supervised:
            supervised[key] = finetune_[key]
    return {**given, "supervised": supervised} if supervised else given


def run_dir_for(cfg: PipelineConfig) -> Path:
    if cfg.out:
        return Path(cfg.out)
    return Path("runs") / f"pipeline-{cfg.pretrain.method}-{time.strftime('%Y%m%d-%H%M%S')}"


def draws_for(cfg: PipelineConfig, index: int) -> int:
    if not cfg.draws or min(cfg.draws) < 1:
        raise ContrastiveError(f"--draws needs positive counts, got {cfg.draws}")
    return cfg.draws[min(index, len(cfg.draws) - 1)]
