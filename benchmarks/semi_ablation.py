"""The semi-supervised stage's levers (fine-tuning views, distillation views, temperature, labelled
term, passes), each judged on the VALIDATION split only, on one pretrained encoder.

The pretrained run must have been trained on the training split minus the pipeline's validation
split (benchmarks/digits_ablation.py's runs are: same split, same seed). For each label draw of
`--fraction`: fine-tune the encoder (the teacher) at `--finetune-lr`, then distil one student per
variant; the teacher's and each student's validation accuracy, mean ± sd over draws, go to
benchmarks/results/semi_ablation.jsonl. The test split is never read.

    python benchmarks/semi_ablation.py --run /tmp/ablation-simclr-b64-15ep --name base \\
        --variant same:student_views=light,teacher_views=same \\
        --variant noisy:student_views=strong,teacher_views=clean

A variant is NAME:key=value,... over distill()'s keywords (student_views, teacher_views,
temperature, alpha), the budget's (epochs, lr; lr default: the fine-tuning lr) and teacher
(finetune, the default, or finetune+spreading, the pipeline's --distill-teacher) and init (pretrained,
the default, or finetuned: the student starts as a copy of the fine-tuned network). kind=semi makes the
variant FixMatch consistency training (contrastive.evaluate.semi) from a copy of the fine-tuned network
instead, with its keywords threshold, ratio and weight:

    python benchmarks/semi_ablation.py --run RUN --name fixmatch --variant fm3:kind=semi,epochs=3
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import torch

from contrastive.checkpoint import list_checkpoints
from contrastive.evaluate.classifier import classifier_from
from contrastive.evaluate.distill import distill
from contrastive.evaluate.features import extract_features
from contrastive.evaluate.finetune import finetune
from contrastive.evaluate.fit import DISTILL, FINETUNE, evaluate_accuracy
from contrastive.evaluate.pretrained import load_pretrained
from contrastive.evaluate.semi import consistency_train
from contrastive.evaluate.teachers import AveragedTeacher, spreading_teacher
from contrastive.modality import load_data
from contrastive.protocol import label_draws, summary, validation_split

RESULTS = Path(__file__).parent / "results" / "semi_ablation.jsonl"
BUDGET_KEYS = ("epochs", "lr", "min_steps", "batch_size")
PIPELINE_KEYS = ("teacher", "init", "kind")
SEMI_KEYS = ("threshold", "ratio", "weight")


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    kwargs = {}
    for pair in filter(None, rest.split(",")):
        key, value = pair.split("=")
        try:
            kwargs[key] = float(value) if "." in value or "e" in value else int(value)
        except ValueError:
            kwargs[key] = value
    return name, kwargs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a pretraining run folder")
    p.add_argument("--name", required=True)
    p.add_argument("--data", default=None)
    p.add_argument("--fraction", type=float, default=0.01)
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--finetune-lr", type=float, default=0.003)
    p.add_argument("--finetune-views", default="light", choices=("light", "strong"))
    p.add_argument("--finetune-min-steps", type=int, default=100)
    p.add_argument("--variant", action="append", default=[])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.set_num_threads(max(1, torch.get_num_threads()))
    pretrained = load_pretrained(list_checkpoints(args.run)[0])
    data = load_data(args.data)
    train_idx, val_idx = validation_split(data.train.labels, 0.1, seed=args.seed)
    train, val = data.train.subset(train_idx), data.train.subset(val_idx)
    reader = pretrained.reader
    variants = [parse_variant(v) for v in args.variant]
    scores: dict[str, list[float]] = {"finetune": [], "finetune+spreading": []}
    train_x = extract_features(pretrained.encoder, train, reader)[0]
    t = time.time()
    ft_budget = dataclasses.replace(FINETUNE, lr=args.finetune_lr, min_steps=args.finetune_min_steps,
                                    augment=True if args.finetune_views == "light" else "strong")
    for d, idx in enumerate(label_draws(train.labels, args.fraction, args.draws, seed=args.seed)):
        seed = args.seed + d
        teacher, _ = finetune(pretrained, train.subset(idx), None, data.num_classes, budget=ft_budget, seed=seed)
        scores["finetune"].append(evaluate_accuracy(teacher, val, reader))
        mask = torch.zeros(len(train), dtype=torch.bool).index_fill_(0, idx, True)
        averaged = AveragedTeacher(teacher, spreading_teacher(pretrained.encoder, train_x, idx, train.labels[idx],
                                                              data.num_classes, seed)).eval()
        scores["finetune+spreading"].append(evaluate_accuracy(averaged, val, reader))
        for name, kw in variants:
            if kw.get("kind") == "semi":
                budget = dataclasses.replace(DISTILL, **{"epochs": 3, "lr": args.finetune_lr,
                                                         **{k: kw[k] for k in BUDGET_KEYS if k in kw}})
                network = copy.deepcopy(teacher)
                stats = consistency_train(network, train, idx, reader, budget=budget, seed=seed,
                                          **{k: kw[k] for k in SEMI_KEYS if k in kw})
                scores.setdefault(name, []).append(evaluate_accuracy(network, val, reader))
                scores.setdefault(name + " confident share", []).append(stats.share)
                continue
            budget = dataclasses.replace(DISTILL, **{"epochs": 5, "lr": args.finetune_lr,
                                                     **{k: kw[k] for k in BUDGET_KEYS if k in kw}})
            options = {k: v for k, v in kw.items() if k not in BUDGET_KEYS + PIPELINE_KEYS}
            options.setdefault("alpha", 0.5)
            student = (copy.deepcopy(teacher) if kw.get("init") == "finetuned"
                       else classifier_from(pretrained, data.num_classes, seed=seed + 1))
            labeller = averaged if kw.get("teacher") == "finetune+spreading" else teacher
            distill(labeller, student, train, None, reader, labeled_mask=mask, budget=budget, seed=seed, **options)
            scores.setdefault(name, []).append(evaluate_accuracy(student, val, reader))
        print(f"draw {d}: " + "  ".join(f"{k} {v[-1]:.4f}" for k, v in scores.items()), flush=True)
    row = {"name": args.name, "run": args.run, "fraction": args.fraction, "finetune_lr": args.finetune_lr,
           "finetune_views": args.finetune_views, "variants": dict(variants), "seconds": round(time.time() - t, 1),
           "validation": {k: summary(v) for k, v in scores.items()}}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(args.name + ": " + "  ".join(f"{k} {s['mean']:.4f} ± {s['sd']:.4f}" for k, s in row["validation"].items()))


if __name__ == "__main__":
    main()
