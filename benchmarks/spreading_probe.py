"""Label spreading's settings, judged on the VALIDATION split only: alpha, neighbours, and whether
the queries sit in the graph (transductive) or are labelled from outside it (inductive, scikit-learn's
predict), on a pretrained encoder's features and on raw pixels, 1% of the labels, 5 draws.

    python benchmarks/spreading_probe.py --run /tmp/ablation-simclr-b64-15ep

The run must have been pretrained on the training split minus the pipeline's validation split
(benchmarks/digits_ablation.py's runs are). Rows go to benchmarks/results/spreading_probe.jsonl.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from contrastive.checkpoint import list_checkpoints
from contrastive.evaluate.features import extract_features
from contrastive.evaluate.pretrained import load_pretrained
from contrastive.modality import load_data
from contrastive.protocol import label_draws, summary, validation_split

RESULTS = Path(__file__).parent / "results" / "spreading_probe.jsonl"
SETTINGS = ((0.2, 10), (0.9, 10), (0.99, 10), (0.99, 20))  # (alpha, neighbours)


def accuracy(train_x, train_y, val_x, val_y, idx, alpha, neighbours, inductive) -> float:
    from sklearn.semi_supervised import LabelSpreading

    if inductive:
        y = np.full(len(train_x), -1)
        y[idx] = train_y[idx]
        model = LabelSpreading(kernel="knn", n_neighbors=neighbours, alpha=alpha, max_iter=1000).fit(train_x, y)
        return float((model.predict(val_x) == val_y).mean())
    x = np.concatenate([train_x, val_x])
    y = np.full(len(x), -1)
    y[idx] = train_y[idx]
    model = LabelSpreading(kernel="knn", n_neighbors=neighbours, alpha=alpha, max_iter=1000).fit(x, y)
    return float((model.transduction_[len(train_x):] == val_y).mean())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--fraction", type=float, default=0.01)
    p.add_argument("--draws", type=int, default=5)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    pre = load_pretrained(list_checkpoints(args.run)[0])
    data = load_data(None)
    tr, va = validation_split(data.train.labels, 0.1, seed=0)
    train, val = data.train.subset(tr), data.train.subset(va)
    unit = lambda x: torch.nn.functional.normalize(x.float(), dim=1).numpy()  # noqa: E731
    spaces = {"features": (unit(extract_features(pre.encoder, train, pre.reader)[0]),
                           unit(extract_features(pre.encoder, val, pre.reader)[0])),
              "pixels": (unit(train.images.reshape(len(train), -1)), unit(val.images.reshape(len(val), -1)))}
    y_tr, y_va = train.labels.numpy(), val.labels.numpy()
    draws = [d.numpy() for d in label_draws(train.labels, args.fraction, args.draws, seed=0)]
    with RESULTS.open("a") as f:
        for space, (a, b) in spaces.items():
            for alpha, neighbours in SETTINGS:
                for inductive in (False, True):
                    s = summary([accuracy(a, y_tr, b, y_va, idx, alpha, neighbours, inductive) for idx in draws])
                    row = {"run": args.run, "space": space, "alpha": alpha, "neighbours": neighbours,
                           "inductive": inductive, "fraction": args.fraction, "validation": s}
                    f.write(json.dumps(row) + "\n")
                    print(f"{space:8s} alpha {alpha:<4} k {neighbours:<2} {'inductive' if inductive else 'in-graph':9s}"
                          f" {s['mean']:.4f} ± {s['sd']:.4f}", flush=True)


if __name__ == "__main__":
    main()
