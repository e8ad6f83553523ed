"""The few-label pipeline of SimCLRv2 (Chen et al. 2020, arXiv:2006.10029), end to end.

pretrain without labels -> kNN -> for each label fraction: supervised baseline (same
architecture, same labels, same budget, random init), linear probe, fine-tune, distilled
student -> results.json, report.md with plots, and the table printed.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path


from contrastive.checkpoint import list_checkpoints
from contrastive.config import PretrainConfig
from contrastive.data import DataSplits, balanced_subset, limit_images, load_data
from contrastive.errors import ContrastiveError
from contrastive.evaluate.classify import (DISTILL, FINETUNE, SUPERVISED, Budget, distill, finetune, linear_probe,
                                           load_pretrained, random_classifier, supervised_baseline)
from contrastive.device import pick_device
from contrastive.train import pretrain

COLUMNS = ("supervised", "linear", "finetune", "distill")


@dataclass
class PipelineConfig:
    method: str = "simclr"
    data: str | None = None
    backbone: str | None = None  # None: as pretraining resolves it (small_cnn on the embedded digits)
    student: str | None = None  # None: the same architecture (self-distillation, SimCLRv2 sec. 2.3)
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)  # SimCLRv2's 1% and 10%, and all labels
    pretrain_epochs: int = 30  # About three minutes of SimCLR on the embedded digits, 2 CPU cores, bf16
    finetune: Budget = FINETUNE
    supervised: Budget = SUPERVISED  # the same steps as finetune; the lr that suits random init
    distill: Budget = DISTILL
    distill_temperature: float = 1.0
    precision: str = "auto"  # Pretraining precision; bf16 where native roughly doubles CPU throughput
    batch_size: int = 256
    lr: float | None = None
    device: str = "auto"
    seed: int = 0
    out: str | None = None
    quick: bool = False  # A smoke run of about a minute: few epochs, 1,000 training images
    train_limit: int | None = None  # Use N training images (a fixed random draw): CPU-sized runs on big data
    test_limit: int | None = None  # Score on N test images (a fixed random draw); None: the whole test split
    tsne: bool = True

    def for_quick(self) -> "PipelineConfig":
        """The --quick smoke version: the whole path, tiny budgets."""
        return dataclasses.replace(
            self, pretrain_epochs=2, train_limit=1000, finetune=Budget(epochs=2, min_steps=40, lr=0.03),
            supervised=Budget(epochs=2, min_steps=40),
            distill=Budget(epochs=1, min_steps=0), tsne=False,
        )


def run_dir_for(cfg: PipelineConfig) -> Path:
    if cfg.out:
        return Path(cfg.out)
    return Path("runs") / f"pipeline-{cfg.method}-{time.strftime('%Y%m%d-%H%M%S')}"


def limited(data: DataSplits, limit: int | None) -> DataSplits:
    return dataclasses.replace(data, train=limit_images(data.train, limit))


def limited_test(data: DataSplits, limit: int | None) -> DataSplits:
    return dataclasses.replace(data, test=limit_images(data.test, limit, seed=1))


def run_pipeline(cfg: PipelineConfig, data: DataSplits | None = None, log=print) -> dict:
    """Run everything; returns the results dict that is also written to OUT/results.json."""
    if cfg.quick:
        cfg = cfg.for_quick()
    data = data or load_data(cfg.data, seed=cfg.seed)
    if data.test is None or not data.train.has_labels:
        raise ContrastiveError(f"the pipeline needs labelled data with a test split; {data.name} has none "
                               "(use folder:DIR with DIR/train/<class>/ and DIR/test/<class>/)")
    data = limited_test(limited(data, cfg.train_limit), cfg.test_limit)
    out = run_dir_for(cfg)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    timings: dict[str, float] = {}

    t = time.time()
    result = pretrain(PretrainConfig(method=cfg.method, data=cfg.data, backbone=cfg.backbone, epochs=cfg.pretrain_epochs,
                                     batch_size=cfg.batch_size, lr=cfg.lr, precision=cfg.precision, device=cfg.device,
                                     seed=cfg.seed, out=str(out / "pretrain")), data=data, log=log)
    timings["pretrain"] = time.time() - t
    if result.knn_final is not None and result.knn_random_init is not None:
        log(f"kNN top-1 (k=200): random-init encoder {result.knn_random_init:.4f} -> pretrained {result.knn_final:.4f}")
    pretrained = load_pretrained(list_checkpoints(result.run_dir)[0])
    backbone, student_name = result.config.backbone, cfg.student or result.config.backbone
    size, channels, n_classes = result.config.image_size, data.channels, data.num_classes

    rows: dict[str, dict] = {}
    for fraction in cfg.fractions:
        t = time.time()
        key = str(fraction)
        idx = balanced_subset(data.train.labels, fraction, seed=cfg.seed)
        labeled = data.train.subset(idx)
        (out / f"labeled-indices-{key}.json").write_text(json.dumps(idx.tolist()))
        common = dict(device=device, seed=cfg.seed)
        row = {"n_labels": len(idx)}
        _, row["supervised"] = supervised_baseline(backbone, channels, result.config.cifar_stem, n_classes, labeled,
                                                   data.test, size, budget=cfg.supervised, **common)
        row["linear"] = linear_probe(pretrained.encoder, labeled, data.test, n_classes, size, channels, **common)
        teacher, row["finetune"] = finetune(pretrained, labeled, data.test, n_classes, size, channels,
                                            budget=cfg.finetune, **common)
        student = random_classifier(student_name, channels, result.config.cifar_stem, n_classes, seed=cfg.seed + 1)
        _, row["distill"] = distill(teacher, student, data.train, data.test, size, channels,
                                    temperature=cfg.distill_temperature, budget=cfg.distill, **common)
        rows[key] = row
        timings[f"fraction {key}"] = time.time() - t
        log(f"labels {fraction:.0%} ({row['n_labels']}): " + "  ".join(f"{c} {row[c]:.4f}" for c in COLUMNS))

    results = {
        "dataset": data.name, "method": cfg.method, "backbone": backbone, "student": student_name,
        "knn_top1": result.knn_final, "label_fractions": rows,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    from contrastive.report import write_report

    write_report(out, results, result.run_dir, pretrained.encoder if cfg.tsne else None, data, size, device,
                 timings, knn_random_init=result.knn_random_init)
    log(format_table(results))
    log(f"results: {out / 'results.json'}  report: {out / 'report.md'}")
    return results


def format_table(results: dict) -> str:
    """The results as a Markdown table (printed at the end of the run and put in the report)."""
    head = "| labels | n | " + " | ".join(COLUMNS) + " | gain of pretraining |"
    lines = [head, "|" + " --- |" * (len(COLUMNS) + 3)]
    for key, row in results["label_fractions"].items():
        best = max(row["finetune"], row["distill"])
        lines.append(f"| {float(key):.0%} | {row['n_labels']} | "
                     + " | ".join(f"{row[c]:.4f}" for c in COLUMNS) + f" | {best - row['supervised']:+.4f} |")
    return "\n".join(lines)
