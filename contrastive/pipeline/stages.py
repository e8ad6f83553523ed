"""The pipeline's stages, each a function from the hand-offs before it to a typed hand-off after it.

split_data -> pretrain_stage -> fraction_stage (per label fraction: choose, then fit every draw) ->
test_stage (the test split, read once) -> write_outputs. run_pipeline (contrastive.pipeline) lists them.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from contrastive.checkpoint import list_checkpoints
from contrastive.device import pick_device
from contrastive.errors import ContrastiveError
from contrastive.evaluate.classifier import save_classifier
from contrastive.evaluate.pretrained import check_compatible, load_pretrained
from contrastive.files import write_json
from contrastive.modality import modality_of
from contrastive.pipeline.choose import choose
from contrastive.pipeline.config import PipelineConfig, draws_for, run_dir_for
from contrastive.pipeline.fits import DrawFits, FrozenFeatures, Predictor, Stage, network_predictor
from contrastive.pipeline.forecast import WallTimeForecast
from contrastive.pipeline.results import Choices, Protocol, Results, Row
from contrastive.pipeline.scores import (final_knn, final_scores, network_costs, raw_knn, validation_probabilities,
                                         validation_scores, validation_thresholds)
from contrastive.pipeline.guard import Guard
from contrastive.protocol import capped_validation, label_draws, summary, validation_split
from contrastive.run_state import data_record
from contrastive.subsets import limit_items
from contrastive.train import pretrain


@dataclass(frozen=True)
class Splits:
    """The data as the protocol splits it: pretraining and every choice see `train` and `val` (as `dev`);
    `test` is read once, at the end."""

    data: object
    train: object
    val: object
    test: object
    out: Path
    device: torch.device
    started: float  # time.time() when the pipeline began

    @property
    def dev(self):
        return dataclasses.replace(self.data, train=self.train, test=self.val)


@dataclass(frozen=True)
class Pretrained:
    """What pretraining hands on: the run's result (config, kNN monitor) and the shared fitting context."""

    result: object  # contrastive.train.RunResult
    stage: Stage
    raw_knn_validation: float | None
    forecast_seconds: float | None = None  # the wall time forecast after the first epoch (None: not made)


@dataclass(frozen=True)
class FractionFits:
    """One label fraction after its fit stage: its draws' indices, how many validation items its choices
    read, its choices, every draw's column predictors, the columns' mean validation accuracy, every draw's
    guards (the semi network and the student against their starts) and, with a positive class, every draw's
    F1 threshold per column, chosen on validation."""

    fraction: float
    draws: list[torch.Tensor]
    n_validation: int
    choices: Choices
    per_draw: list[dict[str, Predictor]]
    validation: dict[str, float]
    guards: list[dict[str, Guard]]
    shipped: dict[str, object]  # the first draw's "teacher" (the network the teacher is built on) and "student"
    thresholds: list[dict[str, float]] = field(default_factory=list)  # per draw: column -> F1 threshold

    @property
    def labels_used(self) -> int:
        """The labels behind the fraction's numbers: a draw's and the validation items its choices read."""
        return len(self.draws[0]) + self.n_validation

    @property
    def key(self) -> str:
        return str(self.fraction)


def split_data(cfg: PipelineConfig, data, log, started: float) -> Splits:
    pre_cfg = cfg.pretrain
    if data.test is None or not data.train.has_labels:
        raise ContrastiveError(f"the pipeline needs labelled data with a test split; {data.name} has none "
                               "(use folder:DIR with DIR/train/<class>/ and DIR/test/<class>/)")
    train_all = limit_items(data.train, pre_cfg.train_limit)
    # Whole families (Juliet's flaw variants) go to one side: a near-identical twin never validates its sibling.
    groups = modality_of(data).groups(train_all)
    train_idx, val_idx = validation_split(train_all.labels, cfg.validation, seed=pre_cfg.seed, groups=groups)
    out = run_dir_for(cfg)
    out.mkdir(parents=True, exist_ok=True)
    splits = Splits(data, train_all.subset(train_idx), train_all.subset(val_idx),
                    limit_items(data.test, cfg.test_limit, seed=1), out, pick_device(pre_cfg.device), started)
    log(f"protocol: {len(splits.train)} training items, {len(splits.val)} held out for validation, "
        f"{len(splits.test)} test items read once at the end")
    return splits


def pretrain_stage(cfg: PipelineConfig, splits: Splits, log) -> Pretrained:
    """Pretraining on the training split (its kNN monitor on validation), then the encoder it saved."""
    forecast = WallTimeForecast(cfg, len(splits.train), len(splits.val), len(splits.test), log, splits.started,
                                modality_of(splits.data).strong_views)
    result = pretrain(dataclasses.replace(cfg.pretrain, out=str(splits.out / "pretrain"), train_limit=None),
                      data=splits.dev, log=log, callbacks=(forecast,))
    pretrained = load_pretrained(list_checkpoints(result.run_dir)[0])
    check_compatible(pretrained, splits.dev)
    n_classes, knn = splits.data.num_classes, result.config.knn
    raw = raw_knn(modality_of(splits.data), splits.train, splits.val, n_classes, knn.k)
    if result.knn_final is not None:
        log(f"kNN top-1 on validation (k={knn.k}): random-init encoder {result.knn_random_init:.4f} -> "
            f"pretrained {result.knn_final:.4f}" + (f"; raw inputs {raw:.4f}" if raw is not None else ""))
    backbone = result.config.backbone
    stage = Stage(cfg, pretrained, backbone, cfg.student or backbone, n_classes, splits.train, splits.val,
                  FrozenFeatures(pretrained.encoder, pretrained.reader, splits.device), splits.device,
                  modality_of(splits.data).strong_views, splits.data.positive_class)
    return Pretrained(result, stage, raw, forecast.expected)


def draw_columns(fits: DrawFits, choices: Choices, baselines: dict,
                 positive: int | None = None) -> dict[str, Predictor]:
    """Every column of one draw with the fraction's choices: the pretrained network's four, the same network
    from random init, and the modality's baselines on the raw inputs (each fitted once on the draw, with the
    fraction's validation split to choose its settings on)."""
    s = fits.stage

    def net(model) -> Predictor:
        return network_predictor(model, s.reader, s.device)

    spreading = fits.spreading()
    columns = {"supervised": net(fits.supervised(choices.supervised_lr)), "linear": net(fits.probe()),
               "encoder_spreading": lambda items: spreading(s.features(items)),
               "finetune": net(fits.finetuned(choices.finetune_lr))}
    if s.semi:
        columns["semi"] = net(fits.semi(choices.finetune_lr))
    columns["distill"] = net(fits.chosen_student(choices))
    for name, baseline in baselines.items():
        columns[name] = baseline_predictor(baseline, fits.labeled, s.train, s.val, s.n_classes, fits.seed, positive)
    return columns


def baseline_predictor(baseline, labeled, pool, val, n_classes: int, seed: int,
                       positive: int | None = None) -> Predictor:
    """A Baseline (contrastive.evaluate.baselines) fitted on the first ask, then that fit for every item set.
    Fitting late lets a baseline that cannot run on this data fail where validation_probabilities drops it."""
    fitted: list[Predictor] = []

    def predict(items) -> np.ndarray:
        if not fitted:
            fitted.append(baseline(labeled, pool, val, n_classes, seed, positive))
        return fitted[0](items)

    return predict


def fraction_validation(cfg: PipelineConfig, stage: Stage, n_labels: int) -> Stage:
    """The stage whose validation split is what a fraction's choices may read: with validation_labels "draw",
    at most as many items as a draw holds labels (contrastive.protocol.capped_validation)."""
    if cfg.validation_labels == "all":
        return stage
    keep = capped_validation(stage.val.labels, n_labels, seed=cfg.pretrain.seed)
    return stage if len(keep) == len(stage.val) else dataclasses.replace(stage, val=stage.val.subset(keep))


def fraction_stage(cfg: PipelineConfig, pre: Pretrained, index: int, fraction: float, splits: Splits,
                   log) -> FractionFits:
    """Label draws of one fraction; the choices on the first draw's fits; every draw fitted with them."""
    t0 = time.time()
    draws = label_draws(pre.stage.train.labels, fraction, draws_for(cfg, index), seed=cfg.pretrain.seed)
    write_json(splits.out / f"labeled-indices-{fraction}.json", [d.tolist() for d in draws])
    stage = fraction_validation(cfg, pre.stage, len(draws[0]))
    log(f"labels {fraction:.0%}: {len(draws[0])} a draw; the choices read {len(stage.val)} validation items "
        f"({len(draws[0]) + len(stage.val)} labels in all)")
    fits = [DrawFits(stage, idx, cfg.pretrain.seed + d) for d, idx in enumerate(draws)]
    choices = choose(cfg, fits[0], log)
    baselines, positive = modality_of(splits.data).baselines, splits.data.positive_class
    per_draw, val_scores, guards, thresholds = [], [], [], []
    for d, draw in enumerate(fits):
        per_draw.append(draw_columns(draw, choices, baselines, positive))
        probs = validation_probabilities(per_draw[-1], stage.val, log)
        val_scores.append(validation_scores(probs, stage.val.labels))
        thresholds.append({} if positive is None else validation_thresholds(probs, stage.val.labels, positive))
        guards.append(draw.chosen_guards(choices))
        log(f"labels {fraction:.0%} draw {d + 1}/{len(draws)} ({len(draw.idx)}), validation: "
            + "  ".join(f"{c} {v:.4f}" for c, v in val_scores[-1].items()))
        if thresholds[-1]:
            log("  F1 thresholds chosen on validation: " + "  ".join(f"{c} {t:.3f}" for c, t in thresholds[-1].items()))
        for name, guard in guards[-1].items():
            if guard.kept == "start" or guard.problems:
                log("  " + guard.describe(name))
        if d == 0 and len(draws) > 1:
            log_time_left(choices, time.time() - t0, len(draws) - 1, fraction, log, stage.semi)
    save_first_draw(fits[0], choices, splits, fraction)
    validation = {c: summary([s[c] for s in val_scores])["mean"] for c in val_scores[0]}
    shipped = {"teacher": fits[0].network(choices.distill_teacher, choices.finetune_lr),
               "student": fits[0].chosen_student(choices)}
    return FractionFits(fraction, draws, len(stage.val), choices, per_draw, validation, guards, shipped, thresholds)


def log_time_left(choices: Choices, seconds: float, draws_left: int, fraction: float, log, semi: bool) -> None:
    """The other draws train 3 networks each (4 with semi) where the first trained every candidate of the
    grids (and semi): priced as if every network cost the same."""
    per_draw = 3 + semi
    fits = (len(choices.supervised_lr_validation) + len(choices.finetune_lr_validation)
            + len(choices.distill_validation)) + per_draw - 3
    log(f"  the other {draws_left} draws of {fraction:.0%}: about "
        f"{seconds * per_draw / fits * draws_left / 60:.1f} min more")


def save_first_draw(fits: DrawFits, choices: Choices, splits: Splits, fraction: float) -> None:
    """The first draw's fine-tuned teacher and student in OUT/classifiers/ (contrastive predict / export)."""
    models = {"finetune": fits.finetuned(choices.finetune_lr), "distill": fits.chosen_student(choices)}
    if fits.stage.semi:
        models["semi"] = fits.semi(choices.finetune_lr)
    for name, model in models.items():
        save_classifier(copy.deepcopy(model).cpu(), splits.out / "classifiers" / f"{name}-{fraction}.pt",
                        data=data_record(splits.data), label_fraction=fraction, indices=fits.idx)


def test_stage(cfg: PipelineConfig, pre: Pretrained, fractions: list[FractionFits], splits: Splits) -> Results:
    """The test split, read once: every column of every draw (F1 at the thresholds validation chose), the
    always-positive floor, and the encoder's kNN."""
    stage, result = pre.stage, pre.result
    rows = {}
    for f in fractions:
        cells, share = final_scores(f.per_draw, splits.test, splits.data.positive_class, f.thresholds)
        guards = {name: [g[name] for g in f.guards] for name in f.guards[0]}
        rows[f.key] = Row(f.fraction, len(f.draws[0]), len(f.draws), f.choices, f.validation, cells,
                          f.labels_used, guards, share)
    knn = final_knn(stage.pretrained.encoder, modality_of(splits.data), stage.train, splits.test, stage.reader,
                    splits.device, stage.n_classes, result.config.knn)
    protocol = Protocol(cfg.validation, len(splits.train), len(splits.val), len(splits.test), result.knn_final,
                        pre.raw_knn_validation)
    shipped = fractions[0].shipped
    networks = network_costs({"teacher": (stage.backbone, shipped["teacher"]),
                              "student": (stage.student, shipped["student"])}, splits.test, stage.reader, splits.device)
    return Results(splits.data.name, cfg.pretrain.method, stage.backbone, stage.student, knn, protocol, rows, networks)
