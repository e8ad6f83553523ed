"""The few-label pipeline of SimCLRv2 (Chen et al. 2020, arXiv:2006.10029), end to end, measured honestly.

pretrain without labels -> for each label fraction, several label draws: the baselines (the same
network from random init, and the modality's non-deep ones on the raw inputs), linear probe,
label spreading on the pretrained features (the raw-input baseline's algorithm on what pretraining
learned), fine-tune, distilled student -> results.json, report.md with plots, the table printed.

The protocol (contrastive.protocol): a validation split is carved out of the training data first.
Pretraining, its kNN monitor and every choice (learning rates of the baseline and of
fine-tuning, picked from grids on the first draw of each fraction) see only the training and
validation items. The test split is read once, at the end, by `final_scores`. Every column is
reported as mean ± sd over the draws, with the per-draw values kept; "gain" is the best
pretrained column minus the best baseline. The fine-tuned teachers and students of the first
draw are kept in OUT/classifiers/ for `contrastive predict` and `contrastive export`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from contrastive.callbacks import Callback
from contrastive.checkpoint import list_checkpoints
from contrastive.config import KnnConfig, PretrainConfig
from contrastive.device import pick_device
from contrastive.errors import ContrastiveError
from contrastive.evaluate.baselines import spreading_predictor
from contrastive.evaluate.classifier import classifier_from, random_classifier, save_classifier
from contrastive.evaluate.distill import STUDENT_VIEWS, TEACHER_VIEWS, distill
from contrastive.evaluate.features import extract_features
from contrastive.evaluate.finetune import finetune, supervised_baseline
from contrastive.evaluate.fit import DISTILL, FINETUNE, SUPERVISED, Budget
from contrastive.evaluate.knn import knn_accuracy
from contrastive.evaluate.pretrained import check_compatible, load_pretrained
from contrastive.evaluate.probe import fit_linear_probe
from contrastive.evaluate.teachers import AveragedTeacher, spreading_teacher
from contrastive.fields import opt
from contrastive.modality import load_data, modality_of
from contrastive.protocol import best_on_validation, label_draws, summary, validation_split
from contrastive.report import PRETRAINED_COLUMNS, format_table, write_report
from contrastive.run_state import data_record
from contrastive.subsets import limit_items
from contrastive.train import pretrain

Predictor = Callable[[object], np.ndarray]  # items -> class probabilities (N, C)
DISTILL_TEACHERS = ("auto", "finetune", "finetune+spreading")


@dataclass(frozen=True)
class PipelineConfig:
    # 30 epochs: on the digits' validation split SimCLR (small_cnn_grid, handwriting views, the data's default batch
    # of 64) read kNN 0.9675 after 15 epochs and 0.9700 after 30, its 1% probe 0.865 and 0.890 (5 draws); the
    # monitor every 5 epochs (it costs a pass over the data).
    pretrain: PretrainConfig = opt(default_factory=lambda: PretrainConfig(epochs=30, knn=KnnConfig(every=5)),
                                   cli=False)
    student: str | None = opt(None, "distillation student backbone; default the pretrained one (self-distillation, "
                                     "SimCLRv2 sec. 2.3)")
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
    distill: Budget = opt(default_factory=lambda: dataclasses.replace(DISTILL, epochs=5),
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
    # on validation at T 1; on the digits the same lr is the best (x 0.1 at T 0.1 read 0.9315 against 0.947).
    distill_lr_factors: tuple[float, ...] = opt((1.0, 0.1), "the student's lr as multiples of the lr fine-tuning "
                                                            "chose, chosen on validation with the temperature")
    distill_alpha: float = opt(0.5, "weight of the labelled cross-entropy in distillation (SimCLRv2 eq. 3; 0: the "
                                    "teacher's predictions alone)")
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
                                              "(a pretraining view; Noisy Student)", choices=STUDENT_VIEWS)
    distill_teacher_views: str = opt("clean", "what the teacher reads: same (the student's view; SimCLRv2) or "
                                             "clean (the untouched item; Noisy Student, FixMatch)",
                                     choices=TEACHER_VIEWS)
    distill_init: str = opt("finetuned", "the student's start: finetuned (a copy of the fine-tuned network), "
                                         "pretrained (the pretrained encoder, a new linear layer) or random",
                            choices=("finetuned", "pretrained", "random"))
    test_limit: int | None = opt(None, "score on N test items only, a fixed random draw (CPU-sized runs on large data)")
    tsne: bool = opt(True, "draw a t-SNE (and a UMAP, with the umap extra) of the test embeddings in the report")
    out: str | None = opt(None, "output folder; default runs/pipeline-<method>-<date-time>")


# --quick: the whole path with tiny budgets, about a minute on 2 CPU cores. Flags typed with --quick win.
QUICK = PipelineConfig(
    pretrain=PretrainConfig(epochs=2, train_limit=1000), draws=(2,),
    supervised_lrs=(0.1,), finetune_lrs=(0.03,), finetune=Budget(epochs=2, min_steps=40, lr=0.03),
    supervised=Budget(epochs=2, min_steps=40), distill=Budget(epochs=1, min_steps=0), distill_temperatures=(0.1,),
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


# --- predictors: every column scored the same way ---------------------------------------------


def network_predictor(model, reader, device) -> Predictor:
    def predict(items) -> np.ndarray:
        logits, _ = extract_features(model, items, reader, device)
        return torch.softmax(logits.float(), dim=1).numpy()

    return predict


def accuracy(probs: np.ndarray, labels: torch.Tensor) -> float:
    return float((probs.argmax(axis=1) == labels.numpy()).mean())


def binary_scores(probs: np.ndarray, labels: torch.Tensor, positive: int) -> dict:
    """F1 of the positive class (predicted by argmax) and the area under its precision-recall curve
    (scikit-learn's average precision)."""
    from sklearn.metrics import average_precision_score, f1_score

    truth = labels.numpy() == positive
    return {"f1": float(f1_score(truth, probs.argmax(axis=1) == positive, zero_division=0)),
            "pr_auc": float(average_precision_score(truth, probs[:, positive])) if truth.any() else 0.0}


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


def choose_lr(fit: Callable[[float], tuple[object, float]], grid: tuple[float, ...], log, name: str,
              max_extra: int = 2) -> tuple[float, dict, object]:
    """(best lr, {lr: validation accuracy}, the model trained with it): each lr of the grid trained and
    scored on validation; while the best lies at an edge the grid is widened (at most max_extra times)."""
    scores, models = {}, {}
    for lr in grid:
        models[lr], scores[lr] = fit(lr)
    for _ in range(max_extra):
        nxt = widened(tuple(scores), best_on_validation(scores))
        if nxt is None:
            break
        models[nxt], scores[nxt] = fit(nxt)
    best = best_on_validation(scores)
    log(f"  {name} on validation: " + "  ".join(f"{lr:g}: {a:.4f}" for lr, a in sorted(scores.items()))
        + f"  -> {best:g}")
    return best, {str(k): v for k, v in sorted(scores.items())}, models[best]


# --- the run ---------------------------------------------------------------------------------


def run_pipeline(cfg: PipelineConfig, data=None, log=print) -> dict:
    """Run everything; returns the results dict that is also written to OUT/results.json."""
    pre_cfg = cfg.pretrain
    data = data or load_data(pre_cfg.data, pre_cfg.data_options)
    if data.test is None or not data.train.has_labels:
        raise ContrastiveError(f"the pipeline needs labelled data with a test split; {data.name} has none "
                               "(use folder:DIR with DIR/train/<class>/ and DIR/test/<class>/)")
    train_all = limit_items(data.train, pre_cfg.train_limit)
    train_idx, val_idx = validation_split(train_all.labels, cfg.validation, seed=pre_cfg.seed)
    train, val = train_all.subset(train_idx), train_all.subset(val_idx)
    sealed_test = limit_items(data.test, cfg.test_limit, seed=1)  # read by final_scores only
    dev = dataclasses.replace(data, train=train, test=val)  # what pretraining and every choice see
    out = run_dir_for(cfg)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(pre_cfg.device)
    modality = modality_of(data)
    timings: dict[str, float] = {}
    log(f"protocol: {len(train)} training items, {len(val)} held out for validation, {len(sealed_test)} test "
        f"items read once at the end")

    t = time.time()
    result = pretrain(dataclasses.replace(pre_cfg, out=str(out / "pretrain"), train_limit=None), data=dev, log=log,
                      callbacks=(WallTimeForecast(cfg, len(train), log),))
    timings["pretrain"] = time.time() - t
    pretrained = load_pretrained(list_checkpoints(result.run_dir)[0])
    check_compatible(pretrained, dev)
    reader, n_classes = pretrained.reader, data.num_classes
    backbone, student_name = result.config.backbone, cfg.student or result.config.backbone
    raw_knn_val = raw_knn(modality, train, val, n_classes, result.config.knn.k)
    if result.knn_final is not None:
        log(f"kNN top-1 on validation (k={result.config.knn.k}): random-init encoder {result.knn_random_init:.4f} -> "
            f"pretrained {result.knn_final:.4f}" + (f"; raw inputs {raw_knn_val:.4f}" if raw_knn_val is not None
                                                   else ""))

    common = dict(device=device)
    cache: dict[int, torch.Tensor] = {}

    def features(items) -> torch.Tensor:  # the frozen encoder's features, computed once per split
        if id(items) not in cache:
            cache[id(items)] = extract_features(pretrained.encoder, items, reader, device)[0]
        return cache[id(items)]

    predictors: dict[str, list[dict[str, Predictor]]] = {}
    rows: dict[str, dict] = {}
    for f_index, fraction in enumerate(cfg.fractions):
        t = time.time()
        key = str(fraction)
        draws = label_draws(train.labels, fraction, draws_for(cfg, f_index), seed=pre_cfg.seed)
        (out / f"labeled-indices-{key}.json").write_text(json.dumps([d.tolist() for d in draws]))
        choices, per_draw, val_scores = {}, [], []
        for d, idx in enumerate(draws):
            labeled = train.subset(idx)
            seed = pre_cfg.seed + d
            models: dict[str, Predictor] = {}

            def fit_supervised(lr, labeled=labeled, seed=seed):
                model, _ = supervised_baseline(reader, backbone, n_classes, labeled, None,
                                               budget=dataclasses.replace(cfg.supervised, lr=lr), seed=seed, **common)
                return model, accuracy(network_predictor(model, reader, device)(val), val.labels)

            def fit_finetune(lr, labeled=labeled, seed=seed):
                model, _ = finetune(pretrained, labeled, None, n_classes, budget=dataclasses.replace(cfg.finetune, lr=lr),
                                    seed=seed, **common)
                return model, accuracy(network_predictor(model, reader, device)(val), val.labels)

            if d == 0:  # choices on validation, made once per fraction on its first draw
                choices["supervised_lr"], choices["supervised_lr_validation"], supervised = choose_lr(
                    fit_supervised, cfg.supervised_lrs, log, "supervised lr")
                choices["finetune_lr"], choices["finetune_lr_validation"], teacher = choose_lr(
                    fit_finetune, cfg.finetune_lrs, log, "finetune lr")
            else:
                supervised, _ = fit_supervised(choices["supervised_lr"])
                teacher, _ = fit_finetune(choices["finetune_lr"])
            models["supervised"] = network_predictor(supervised, reader, device)
            probe = fit_linear_probe(pretrained.encoder, labeled, n_classes, reader, device=device)
            models["linear"] = network_predictor(probe, reader, device)
            spreading = spreading_predictor(features(train)[idx], train.labels[idx], features(train), n_classes,
                                            seed)
            models["encoder_spreading"] = lambda items, spreading=spreading: spreading(features(items))
            models["finetune"] = network_predictor(teacher, reader, device)
            mask = torch.zeros(len(train), dtype=torch.bool).index_fill_(0, idx, True)
            labeller = teacher
            if d == 0 and cfg.distill_teacher == "finetune":
                choices["distill_teacher"] = "finetune"
            elif d == 0 or choices["distill_teacher"] == "finetune+spreading":  # label spreading only where used
                averaged = AveragedTeacher(teacher, spreading_teacher(
                    pretrained.encoder, features(train), idx, train.labels[idx], n_classes, seed)).eval()
                if d == 0:
                    choices["distill_teacher"], choices["distill_teacher_validation"] = choose_teacher(
                        cfg.distill_teacher, {"finetune": teacher, "finetune+spreading": averaged}, reader, val,
                        device, log)
                if choices["distill_teacher"] == "finetune+spreading":
                    labeller = averaged

            def fit_distill(temperature, lr_factor, labeller=labeller, mask=mask, seed=seed, teacher=teacher):
                student, budget = student_for(cfg, pretrained, reader, student_name, n_classes, seed,
                                              choices["finetune_lr"], teacher)
                budget = dataclasses.replace(budget, lr=budget.lr * lr_factor)
                distill(labeller, student, train, None, reader, temperature=temperature, alpha=cfg.distill_alpha,
                        labeled_mask=mask, budget=budget, seed=seed, student_views=cfg.distill_student_views,
                        teacher_views=cfg.distill_teacher_views, **common)
                return student, accuracy(network_predictor(student, reader, device)(val), val.labels)

            if d == 0:
                (choices["distill_temperature"], choices["distill_lr_factor"]), choices["distill_validation"], \
                    student = choose_distillation(fit_distill, cfg.distill_temperatures, cfg.distill_lr_factors, log)
            else:
                student, _ = fit_distill(choices["distill_temperature"], choices["distill_lr_factor"])
            models["distill"] = network_predictor(student, reader, device)
            for name, baseline in modality.baselines.items():
                models[name] = (lambda items, baseline=baseline, labeled=labeled, seed=seed:
                                baseline(labeled, train, items, n_classes, seed))
            val_scores.append(validation_scores(models, val, log))
            per_draw.append(models)
            if d == 0:
                for name, model in (("finetune", teacher), ("distill", student)):
                    save_classifier(model.cpu(), out / "classifiers" / f"{name}-{key}.pt", data=data_record(data),
                                    label_fraction=fraction, indices=idx)
            log(f"labels {fraction:.0%} draw {d + 1}/{len(draws)} ({len(idx)}), validation: "
                + "  ".join(f"{c} {v:.4f}" for c, v in val_scores[-1].items()))
            if d == 0 and len(draws) > 1:
                fits = (len(choices["supervised_lr_validation"]) + len(choices["finetune_lr_validation"])
                        + len(choices["distill_validation"]))
                left = (time.time() - t) * 3 / fits * (len(draws) - 1)  # later draws train 3 networks, not `fits`
                log(f"  the other {len(draws) - 1} draws of {fraction:.0%}: about {left / 60:.1f} min more")
        predictors[key] = per_draw
        rows[key] = {"n_labels": len(draws[0]), "draws": len(draws), "choices": choices,
                     "validation": {c: summary([s[c] for s in val_scores])["mean"] for c in val_scores[0]}}
        timings[f"fraction {key}"] = time.time() - t

    t = time.time()
    final = final_scores(predictors, sealed_test, getattr(data, "positive_class", None))
    knn_test = final_knn(pretrained.encoder, modality, train, sealed_test, reader, device, n_classes, result.config.knn)
    timings["test"] = time.time() - t
    for key, row in rows.items():
        row.update(final[key])
    results = {
        "dataset": data.name, "method": pre_cfg.method, "backbone": backbone, "student": student_name,
        "knn_top1": knn_test["encoder"], "knn": knn_test,
        "protocol": {"validation": cfg.validation, "n_train": len(train), "n_validation": len(val),
                     "n_test": len(sealed_test), "knn_validation": result.knn_final,
                     "raw_knn_validation": raw_knn_val, "seconds": timings},
        "label_fractions": rows,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_report(out, results, result.run_dir, pretrained.encoder if cfg.tsne else None, dataclasses.replace(
        data, test=sealed_test), reader, device, timings, knn_random_init=result.knn_random_init,
                 knn_k=result.config.knn.k, knn_temperature=result.config.knn.temperature)
    if pre_cfg.tensorboard:
        from contrastive.tensorboard import log_results

        log_results(out / "tensorboard", results)
    log(format_table(results))
    log(f"results: {out / 'results.json'}  report: {out / 'report.md'}")
    return results


def choose_distillation(fit, temperatures: tuple[float, ...], lr_factors: tuple[float, ...], log
                        ) -> tuple[tuple[float, float], dict[str, float], object]:
    """((T, lr factor), {"T t, lr x f": validation accuracy}, the student trained with the best pair): every
    pair of the two grids distilled and scored on validation; the first best pair wins a tie."""
    scores, students = {}, {}
    for t in temperatures:
        for f in lr_factors:
            students[(t, f)], scores[(t, f)] = fit(t, f)
    best = best_on_validation(scores)
    named = {f"T {t:g}, lr x{f:g}": v for (t, f), v in scores.items()}
    log("  distillation on validation: " + "  ".join(f"{n}: {v:.4f}" for n, v in named.items())
        + f"  -> T {best[0]:g}, lr x{best[1]:g}")
    return best, named, students[best]


def choose_teacher(setting: str, teachers: dict, reader, val, device, log) -> tuple[str, dict[str, float]]:
    """(the distillation teacher's name, every candidate's validation accuracy): `setting` itself, or with
    "auto" the candidate with the best validation accuracy (the first on a tie)."""
    scores = {name: accuracy(network_predictor(t, reader, device)(val), val.labels) for name, t in teachers.items()}
    best = best_on_validation(scores) if setting == "auto" else setting
    log("  distillation teacher on validation: " + "  ".join(f"{n}: {v:.4f}" for n, v in scores.items())
        + f"  -> {best}")
    return best, scores


def validation_scores(models: dict[str, Predictor], val, log) -> dict[str, float]:
    """Each column's validation accuracy; a baseline that cannot run on this data (e.g. images read file
    by file) is dropped from `models` with a line in the log."""
    scores = {}
    for column in list(models):
        try:
            scores[column] = accuracy(models[column](val), val.labels)
        except ContrastiveError as e:
            if column in PRETRAINED_COLUMNS or column == "supervised":
                raise
            log(f"  baseline {column} left out: {e}")
            del models[column]
    return scores


def student_for(cfg: PipelineConfig, pretrained, reader, student_name: str, n_classes: int, seed: int,
                finetune_lr: float, finetuned=None):
    """(the distillation student, its budget). With cfg.distill_init = finetuned and the same network, the
    student is a copy of the fine-tuned network `finetuned` and trains at fine-tuning's learning rate: it
    starts where the teacher is. With pretrained and the same network,
    the student starts from the pretrained encoder (a new linear layer) and trains at the learning rate
    fine-tuning chose on validation: the distill budget's lr (0.1, for random init) wrecked the pretrained
    features on the digits (validation 0.79 against its 0.92 teacher). Else a random network of
    `student_name` at the distill budget's lr."""
    same = student_name == pretrained.record["backbone"]
    if cfg.distill_init == "finetuned" and same and finetuned is not None:
        return copy.deepcopy(finetuned), dataclasses.replace(cfg.distill, lr=finetune_lr)
    if cfg.distill_init in ("finetuned", "pretrained") and same:
        student = classifier_from(pretrained, n_classes, from_head_layer=True, seed=seed + 1)
        return student, dataclasses.replace(cfg.distill, lr=finetune_lr)
    return random_classifier(reader, student_name, n_classes, seed=seed + 1), cfg.distill


def final_scores(predictors: dict[str, list[dict[str, Predictor]]], test, positive: int | None) -> dict:
    """The test numbers, read once: per fraction, every column's mean (the row's own keys), and its
    sd and per-draw values; the best baseline, and gain = best pretrained column minus it. With a
    positive class (binary detection), F1 and PR-AUC means per column too."""
    out = {}
    for key, draws in predictors.items():
        values: dict[str, list[float]] = {}
        binary: dict[str, dict[str, list[float]]] = {"f1": {}, "pr_auc": {}}
        for models in draws:
            for column, predict in models.items():
                probs = predict(test)
                values.setdefault(column, []).append(accuracy(probs, test.labels))
                if positive is not None:
                    for metric, v in binary_scores(probs, test.labels, positive).items():
                        binary[metric].setdefault(column, []).append(v)
        stats = {c: summary(v) for c, v in values.items()}
        baselines = [c for c in stats if c not in PRETRAINED_COLUMNS]
        best_baseline = max(baselines, key=lambda c: stats[c]["mean"])
        best_pretrained = max((c for c in stats if c in PRETRAINED_COLUMNS), key=lambda c: stats[c]["mean"])
        row = {c: s["mean"] for c, s in stats.items()}
        row.update({"sd": {c: s["sd"] for c, s in stats.items()}, "values": {c: s["values"] for c, s in stats.items()},
                    "best_baseline": best_baseline,
                    "gain": stats[best_pretrained]["mean"] - stats[best_baseline]["mean"]})
        if positive is not None:
            for metric, per_column in binary.items():
                row[metric] = {c: summary(v)["mean"] for c, v in per_column.items()}
        out[key] = row
    return out


def raw_knn(modality, bank, queries, num_classes: int, k: int) -> float | None:
    """kNN top-1 on the raw inputs (the modality's vectors), where it has them."""
    vectors = getattr(modality, "raw_vectors", None)
    if vectors is None:
        return None
    bank_x, query_x = vectors(bank), vectors(queries)
    if bank_x is None or query_x is None:
        return None
    return knn_accuracy(bank_x, bank.labels, query_x, queries.labels, num_classes, k=k)


def final_knn(encoder, modality, bank, test, reader, device, num_classes: int, knn: KnnConfig) -> dict:
    """The encoder's kNN top-1 on the test split (training items as the bank) beside the raw inputs'."""
    from contrastive.evaluate.knn import encoder_knn_accuracy

    return {"k": knn.k, "temperature": knn.temperature,
            "encoder": encoder_knn_accuracy(encoder, bank, test, num_classes, reader, device, knn.k, knn.temperature),
            "raw": raw_knn(modality, bank, test, num_classes, knn.k)}


class WallTimeForecast(Callback):
    """After the first pretraining epoch, prints the expected wall time of the whole pipeline.

    Costs are counted in item passes (forward + backward of one item) and priced at the
    first epoch's rate: pretraining an item is two passes (two views); a classifier step on
    an item is one; distillation one and a half (the teacher's forward is about half a pass).
    The learning-rate and temperature grids train len(grid) models on each fraction's first draw.
    """

    def __init__(self, cfg: PipelineConfig, n_train: int, log):
        self.cfg, self.n_train, self.log, self.t0, self.first = cfg, n_train, log, None, None

    def on_start(self, run) -> None:
        self.t0, self.first = time.time(), run.epoch

    def on_epoch_end(self, run, epoch: int, record: dict) -> None:
        if epoch != self.first or self.t0 is None:
            return
        seconds = time.time() - self.t0
        per_pass = seconds / max(1, self.n_train * 2)  # two views an item
        pretrain_left = seconds * (run.cfg.epochs - epoch - 1)
        passes = 0.0
        for i, fraction in enumerate(self.cfg.fractions):
            labeled = max(1, round(fraction * self.n_train))
            draws = 1 if fraction >= 1 else draws_for(self.cfg, i)
            for budget, extra in ((self.cfg.supervised, len(self.cfg.supervised_lrs)),
                                  (self.cfg.finetune, len(self.cfg.finetune_lrs))):
                steps = max(budget.epochs * -(-labeled // budget.batch_size), budget.min_steps)
                passes += steps * min(budget.batch_size, labeled) * (draws - 1 + extra)
            d = self.cfg.distill
            steps = max(d.epochs * -(-self.n_train // d.batch_size), d.min_steps)
            grid = len(self.cfg.distill_temperatures) * len(self.cfg.distill_lr_factors)
            passes += 1.5 * steps * min(d.batch_size, self.n_train) * (draws - 1 + grid)
        total = seconds + pretrain_left + passes * per_pass
        self.log(f"expected wall time of the whole pipeline: about {total / 60:.1f} min (pretraining "
                 f"{(seconds + pretrain_left) / 60:.1f} min, then the label fractions; priced at the first epoch)")
