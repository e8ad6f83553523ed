"""The few-label pipeline of SimCLRv2 (Chen et al. 2020, arXiv:2006.10029), end to end.

pretrain without labels -> kNN -> for each label fraction: supervised baseline (same
architecture, same labels, same budget, random init), linear probe, fine-tune, distilled
student -> results.json, report.md with plots, and the table printed. The fine-tuned teachers and
the students are kept in OUT/classifiers/ for `contrastive predict` and `contrastive export`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from contrastive.checkpoint import list_checkpoints
from contrastive.config import PretrainConfig
from contrastive.device import pick_device
from contrastive.errors import ContrastiveError
from contrastive.evaluate.classifier import random_classifier, save_classifier
from contrastive.evaluate.distill import distill
from contrastive.evaluate.finetune import finetune, supervised_baseline
from contrastive.evaluate.fit import DISTILL, FINETUNE, SUPERVISED, Budget
from contrastive.evaluate.pretrained import check_compatible, load_pretrained
from contrastive.evaluate.probe import linear_probe
from contrastive.fields import opt
from contrastive.modality import load_data
from contrastive.report import COLUMNS, format_table, write_report
from contrastive.run_state import data_record
from contrastive.subsets import balanced_subset, limit_items
from contrastive.train import pretrain


@dataclass(frozen=True)
class PipelineConfig:
    pretrain: PretrainConfig = opt(default_factory=PretrainConfig, cli=False)  # its flags are the pretrain command's
    student: str | None = opt(None, "distillation student backbone; default the pretrained one (self-distillation, "
                                     "SimCLRv2 sec. 2.3)")
    fractions: tuple[float, ...] = opt((0.01, 0.1, 1.0), "label fractions: SimCLRv2's 1% and 10%, and all labels")
    # The supervised baseline gets fine-tuning's steps (pass --finetune-epochs / --finetune-min-steps and the
    # baseline follows); each keeps its own best lr.
    finetune: Budget = opt(default_factory=lambda: FINETUNE, help="fine-tuning budget")
    supervised: Budget = opt(default_factory=lambda: SUPERVISED, help="supervised-baseline budget")
    distill: Budget = opt(default_factory=lambda: DISTILL, help="distillation budget")
    distill_temperature: float = opt(1.0, "softmax temperature of SimCLRv2's distillation loss (eq. 2)")
    test_limit: int | None = opt(None, "score on N test items only, a fixed random draw (CPU-sized runs on large data)")
    tsne: bool = opt(True, "draw a t-SNE (and a UMAP, with the umap extra) of the test embeddings in the report")
    out: str | None = opt(None, "output folder; default runs/pipeline-<method>-<date-time>")


# --quick: the whole path with tiny budgets, about a minute on 2 CPU cores. Flags typed with --quick win.
QUICK = PipelineConfig(
    pretrain=PretrainConfig(epochs=2, train_limit=1000), finetune=Budget(epochs=2, min_steps=40, lr=0.03),
    supervised=Budget(epochs=2, min_steps=40), distill=Budget(epochs=1, min_steps=0), tsne=False)


def matched_baseline(given: dict) -> dict:
    """Typed overrides with the supervised baseline given fine-tuning's epochs and min_steps where the user
    set those for fine-tuning only: the baseline must get the same steps to be a fair comparison."""
    finetune, supervised = given.get("finetune", {}), dict(given.get("supervised", {}))
    for key in ("epochs", "min_steps"):
        if key in finetune and key not in supervised:
            supervised[key] = finetune[key]
    return {**given, "supervised": supervised} if supervised else given


def run_dir_for(cfg: PipelineConfig) -> Path:
    if cfg.out:
        return Path(cfg.out)
    return Path("runs") / f"pipeline-{cfg.pretrain.method}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_pipeline(cfg: PipelineConfig, data=None, log=print) -> dict:
    """Run everything; returns the results dict that is also written to OUT/results.json."""
    pre_cfg = cfg.pretrain
    data = data or load_data(pre_cfg.data, pre_cfg.data_options)
    if data.test is None or not data.train.has_labels:
        raise ContrastiveError(f"the pipeline needs labelled data with a test split; {data.name} has none "
                               "(use folder:DIR with DIR/train/<class>/ and DIR/test/<class>/)")
    data = dataclasses.replace(data, train=limit_items(data.train, pre_cfg.train_limit),
                               test=limit_items(data.test, cfg.test_limit, seed=1))
    out = run_dir_for(cfg)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(pre_cfg.device)
    timings: dict[str, float] = {}

    t = time.time()
    result = pretrain(dataclasses.replace(pre_cfg, out=str(out / "pretrain")), data=data, log=log)
    timings["pretrain"] = time.time() - t
    if result.knn_final is not None and result.knn_random_init is not None:
        log(f"kNN top-1 (k={result.config.knn.k}): random-init encoder {result.knn_random_init:.4f} -> "
            f"pretrained {result.knn_final:.4f}")
    pretrained = load_pretrained(list_checkpoints(result.run_dir)[0])
    check_compatible(pretrained, data)
    reader, n_classes = pretrained.reader, data.num_classes
    backbone, student_name = result.config.backbone, cfg.student or result.config.backbone

    rows: dict[str, dict] = {}
    for fraction in cfg.fractions:
        t = time.time()
        key = str(fraction)
        idx = balanced_subset(data.train.labels, fraction, seed=pre_cfg.seed)
        labeled = data.train.subset(idx)
        (out / f"labeled-indices-{key}.json").write_text(json.dumps(idx.tolist()))
        common = dict(device=device, seed=pre_cfg.seed)
        row = {"n_labels": len(idx)}
        _, row["supervised"] = supervised_baseline(reader, backbone, n_classes, labeled, data.test,
                                                   budget=cfg.supervised, **common)
        row["linear"] = linear_probe(pretrained.encoder, labeled, data.test, n_classes, reader, **common)
        teacher, row["finetune"] = finetune(pretrained, labeled, data.test, n_classes, budget=cfg.finetune, **common)
        student = random_classifier(reader, student_name, n_classes, seed=pre_cfg.seed + 1)
        _, row["distill"] = distill(teacher, student, data.train, data.test, reader,
                                    temperature=cfg.distill_temperature, budget=cfg.distill, **common)
        for name, model in (("finetune", teacher), ("distill", student)):
            save_classifier(model.cpu(), out / "classifiers" / f"{name}-{key}.pt", data=data_record(data),
                            label_fraction=fraction, indices=idx)
        rows[key] = row
        timings[f"fraction {key}"] = time.time() - t
        log(f"labels {fraction:.0%} ({row['n_labels']}): " + "  ".join(f"{c} {row[c]:.4f}" for c in COLUMNS))

    results = {
        "dataset": data.name, "method": pre_cfg.method, "backbone": backbone, "student": student_name,
        "knn_top1": result.knn_final, "label_fractions": rows,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_report(out, results, result.run_dir, pretrained.encoder if cfg.tsne else None, data, reader, device,
                 timings, knn_random_init=result.knn_random_init, knn_k=result.config.knn.k,
                 knn_temperature=result.config.knn.temperature)
    if pre_cfg.tensorboard:
        from contrastive.tensorboard import log_results

        log_results(out / "tensorboard", results)
    log(format_table(results))
    log(f"results: {out / 'results.json'}  report: {out / 'report.md'}")
    return results
