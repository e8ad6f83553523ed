"""Representation levers on the embedded digits, each judged on the VALIDATION split only.

One run = pretrain on the training split minus a 10% validation split, then on the validation
split: the encoder's weighted kNN (k=20, T=0.1, bank = the training split with its labels) beside
raw pixels' kNN, and a 1%-label logistic probe (scikit-learn, on L2-normalised features) over 5
label draws, mean ± sd. The test split is never read.

    python benchmarks/digits_ablation.py --name base -- --epochs 30
    python benchmarks/digits_ablation.py --name grid -- --backbone small_cnn_grid --views handwriting

Everything after `--` is passed to `contrastive pretrain` (its flags). Each run appends a JSON
line to benchmarks/results/digits_ablation.jsonl.

`--split test` is for the end, once the flags were chosen on validation: the same training split,
scored on the test split instead, the row going to benchmarks/results/digits_methods.jsonl (the
per-method table in BENCHMARKS.md):

    python benchmarks/digits_ablation.py --split test --name dino -- --method dino --epochs 15
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from contrastive.evaluate.features import extract_features
from contrastive.evaluate.knn import knn_accuracy
from contrastive.modality import load_data
from contrastive.protocol import label_draws, summary, validation_split

RESULTS = {"validation": Path(__file__).parent / "results" / "digits_ablation.jsonl",
           "test": Path(__file__).parent / "results" / "digits_methods.jsonl"}


def probe_accuracy(train_x, train_y, val_x, val_y, fraction: float, draws: int, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-8)  # noqa: E731
    train_x, val_x = norm(train_x), norm(val_x)
    accs = []
    for idx in label_draws(torch.as_tensor(train_y), fraction, draws, seed):
        clf = LogisticRegression(C=10.0, max_iter=2000).fit(train_x[idx], train_y[idx])
        accs.append(float((clf.predict(val_x) == val_y).mean()))
    return summary(accs)


def main(argv=None):
    from contrastive.cli import build_parser
    from contrastive.commands import pretrain_config
    from contrastive.config import PretrainConfig
    from contrastive.fields import build
    from contrastive.train import pretrain

    argv = sys.argv[1:] if argv is None else argv
    ours, rest = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=tuple(RESULTS), default="validation",
                   help="where to score: the validation split (choices), or the test split (the final table)")
    args = p.parse_args(ours)

    parsed = build_parser().parse_args(["pretrain", *rest, "--out", f"/tmp/ablation-{args.name}"])
    cfg = build(PretrainConfig, None, pretrain_config(parsed))
    data = load_data(cfg.data, cfg.data_options)
    train_idx, val_idx = validation_split(data.train.labels, 0.1, seed=args.seed)
    scored = data.train.subset(val_idx) if args.split == "validation" else data.test
    splits = dataclasses.replace(data, train=data.train.subset(train_idx), test=scored)
    t = time.time()
    result = pretrain(cfg, data=splits, log=lambda *a: None)
    seconds = time.time() - t
    from contrastive.modality import reader_for

    reader = reader_for(splits, result.config.data_options)
    tr_x, tr_y = extract_features(result.model.encoder, splits.train, reader)
    va_x, va_y = extract_features(result.model.encoder, splits.test, reader)
    pix = lambda s: s.images.reshape(len(s), -1).float()  # noqa: E731
    row = {
        "name": args.name, "args": rest, "split": args.split, "seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "knn20": knn_accuracy(tr_x, tr_y, va_x, va_y, data.num_classes, k=20),
        "pixel_knn20": knn_accuracy(pix(splits.train), tr_y, pix(splits.test), va_y, data.num_classes, k=20),
        "probe_1pct": probe_accuracy(tr_x.numpy(), tr_y.numpy(), va_x.numpy(), va_y.numpy(), 0.01, 5, args.seed),
    }
    RESULTS[args.split].parent.mkdir(parents=True, exist_ok=True)
    with RESULTS[args.split].open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"{args.name}: kNN20 {row['knn20']:.4f} (pixels {row['pixel_knn20']:.4f})  1% probe "
          f"{row['probe_1pct']['mean']:.4f} ± {row['probe_1pct']['sd']:.4f}  {seconds:.0f}s")


if __name__ == "__main__":
    main()
