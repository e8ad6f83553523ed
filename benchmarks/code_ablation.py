"""Levers of pretraining on Juliet functions (views, epochs, encoder, subset size), each judged on the
VALIDATION split only: the test split of the code data is never read.

One run = pretrain on the training split minus a 10% validation split (contrastive.protocol.
validation_split, seed 0, as the pipeline carves it), then on the validation split:

- the encoder's weighted kNN (k=20, T=0.1, bank = the rest of the training split with its labels)
  beside the random-init encoder's (pretraining's own monitor) and TF-IDF's (cosine kNN of the
  baseline's vectors);
- a few-label probe: the pipeline's linear probe (logistic regression on standardised features)
  at 1% and 10% of the labels, 3 draws each, accuracy and F1 of the vulnerable class (mean ± sd), beside the random-init
  encoder's features and the TF-IDF baseline (contrastive.code.baselines) on the same draws.

    python benchmarks/code_ablation.py --name base --views semantic -- --data juliet:/tmp/juliet/juliet-c --epochs 15

`--views` picks the pretraining views (presets in VIEWS below; contrastive.code.views): they are
swapped in for this run only. Everything after `--` is passed to `contrastive pretrain`. Each run
appends a JSON line to benchmarks/results/code_ablation.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from contrastive.evaluate.features import extract_features
from contrastive.evaluate.knn import knn_accuracy
from contrastive.modality import load_data, reader_for
from contrastive.protocol import label_draws, summary, validation_split

RESULTS = Path(__file__).parent / "results" / "code_ablation.jsonl"

# name -> (TokenRecipe fields, rename every step): what two pretraining views are made of. "default" is the
# recipe before this ablation (generic and semantic views); "semantic" is the one the ablation chose, now
# TokenRecipe's defaults.
VIEWS = {
    "default": (dict(crop=(0.6, 1.0), delete_prob=0.5, delete_share=0.1, mask_rate=0.1), True),
    "semantic": (dict(crop=(1.0, 1.0), delete_prob=0.0, mask_rate=0.0), True),  # variants + renaming only
    "semantic_mask": (dict(crop=(1.0, 1.0), delete_prob=0.0, mask_rate=0.05), True),
    "light_crop": (dict(crop=(0.9, 1.0), delete_prob=0.0, mask_rate=0.05), True),
    "no_crop": (dict(crop=(1.0, 1.0), delete_prob=0.5, delete_share=0.1, mask_rate=0.1), True),
    "variants_only": (dict(crop=(1.0, 1.0), delete_prob=0.0, mask_rate=0.0), False),
}


def use_views(name: str) -> None:
    """Swap the pretraining views for this process (CODE.pretrain_views reads these names at call time)."""
    import contrastive.code.views as views

    fields, rename = VIEWS[name]
    views.TokenRecipe = functools.partial(views.TokenRecipe, **fields)
    if not rename:
        views.placeholder_blocks = lambda vocab: []


def probe(train_x, train_y, val_x, val_y, draws, positive) -> dict:
    """The pipeline's linear probe (contrastive.evaluate.probe: standardised features, L-BFGS, weight decay
    1e-4) on cached features, per label draw: accuracy and positive-class F1."""
    from sklearn.metrics import f1_score

    from contrastive.evaluate.probe import PROBE_ITERATIONS

    acc, f1 = [], []
    for idx in draws:
        x, y = train_x[idx], train_y[idx]
        mean, std = x.mean(0), x.std(0).nan_to_num(1.0).clamp_min(1e-6)
        linear = torch.nn.Linear(x.shape[1], int(train_y.max()) + 1)
        torch.nn.init.zeros_(linear.weight)
        torch.nn.init.zeros_(linear.bias)
        opt = torch.optim.LBFGS(linear.parameters(), max_iter=PROBE_ITERATIONS, history_size=20,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(linear((x - mean) / std), y) + 0.5e-4 * linear.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            pred = linear((val_x - mean) / std).argmax(1).numpy()
        truth = val_y.numpy()
        acc.append(float((pred == truth).mean()))
        f1.append(float(f1_score(truth == positive, pred == positive, zero_division=0)))
    return {"acc": summary(acc), "f1": summary(f1)}


def tfidf_scores(train, val, draws, positive, num_classes) -> dict:
    """The pipeline's TF-IDF baseline on the same draws (accuracy, F1)."""
    from sklearn.metrics import f1_score

    from contrastive.code.baselines import tfidf

    acc, f1 = [], []
    for d, idx in enumerate(draws):
        pred = tfidf(train.subset(idx), train, val, num_classes, d).argmax(1)
        truth = val.labels.numpy()
        acc.append(float((pred == truth).mean()))
        f1.append(float(f1_score(truth == positive, pred == positive, zero_division=0)))
    return {"acc": summary(acc), "f1": summary(f1)}


def tfidf_knn(train, val, num_classes: int, k: int = 20) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer

    from contrastive.code.baselines import MAX_FEATURES, NGRAMS, documents

    vec = TfidfVectorizer(token_pattern=r"\S+", ngram_range=NGRAMS, max_features=MAX_FEATURES, sublinear_tf=True,
                          lowercase=False).fit(documents(train))
    x = lambda s: torch.as_tensor(vec.transform(documents(s)).toarray(), dtype=torch.float32)  # noqa: E731
    return knn_accuracy(x(train), train.labels, x(val), val.labels, num_classes, k=k)


def last_loss(metrics: Path) -> float | None:
    losses = [r["loss"] for r in map(json.loads, metrics.read_text().splitlines()) if "loss" in r]
    return losses[-1] if losses else None


def fmt(s: dict) -> str:
    return f"{s['mean']:.3f} ± {s['sd']:.3f}"


def table(path: Path = RESULTS) -> str:
    """The runs so far as a Markdown table (validation numbers only)."""
    lines = ["| run | views | pretrain args | n train/val | s | kNN20 (random, tfidf) | 1% probe acc / F1 (random F1, "
             "tfidf F1) | 10% probe acc / F1 (random F1, tfidf F1) |", "|" + " --- |" * 8]
    for row in map(json.loads, path.read_text().splitlines()):
        cells = [f"{row['knn20']:.3f} ({row['knn20_random_init']:.3f}, {row['knn20_tfidf']:.3f})"]
        for key in ("0.01", "0.1"):
            p, r, t = row[f"probe_{key}"], row[f"probe_random_{key}"], row[f"tfidf_{key}"]
            cells.append(f"{fmt(p['acc'])} / {fmt(p['f1'])} ({r['f1']['mean']:.3f}, {t['f1']['mean']:.3f})")
        args = " ".join(a for a in row["args"] if not a.startswith("juliet:") and a != "--data")
        lines.append(f"| {row['name']} | {row['views']} | `{args}` | {row['n_train']}/{row['n_validation']} | "
                     f"{row['seconds']:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    p.add_argument("--views", default="default", choices=sorted(VIEWS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cnn-width", type=int, default=None, help="the cnn encoder's width for this run (default: "
                                                                "contrastive.code.encoders' own)")
    p.add_argument("--table", action="store_true", help="print the runs so far as a Markdown table and stop")
    args = p.parse_args(ours + (["--name", "-"] if "--table" in ours and "--name" not in ours else []))
    if args.table:
        print(table())
        return
    use_views(args.views)
    if args.cnn_width:
        from contrastive.code import encoders

        encoders.ENCODERS["cnn"] = lambda vocab_size, max_tokens: encoders.TokenCNN(vocab_size, width=args.cnn_width)

    out = Path(f"/tmp/code-ablation-{args.name}")
    shutil.rmtree(out, ignore_errors=True)  # this script's own scratch folder: a rerun starts afresh
    parsed = build_parser().parse_args(["pretrain", *rest, "--knn-k", "20", "--out", str(out)])
    cfg = build(PretrainConfig, None, pretrain_config(parsed))
    data = load_data(cfg.data, cfg.data_options)
    train_idx, val_idx = validation_split(data.train.labels, 0.1, seed=args.seed)
    # the test split is dropped here: pretraining's kNN monitor reads the validation split instead
    splits = dataclasses.replace(data, train=data.train.subset(train_idx), test=data.train.subset(val_idx))
    train, val, positive, n_classes = splits.train, splits.test, data.positive_class, data.num_classes
    t = time.time()
    result = pretrain(cfg, data=splits, log=lambda *a: None)
    seconds = time.time() - t
    reader = reader_for(splits, result.config.data_options)
    tr_x, tr_y = extract_features(result.model.encoder, train, reader)
    va_x, va_y = extract_features(result.model.encoder, val, reader)
    from contrastive.modality import modality_of

    torch.manual_seed(args.seed)
    random_encoder, _ = modality_of(splits).build_encoder(result.config.backbone,
                                                          modality_of(splits).encoder_inputs(splits, {}))
    r_tr, _ = extract_features(random_encoder, train, reader)
    r_va, _ = extract_features(random_encoder, val, reader)
    row = {"name": args.name, "views": args.views, "args": rest + ([f"cnn width {args.cnn_width}"] if args.cnn_width
                                                                    else []), "seconds": round(seconds, 1),
           "n_train": len(train), "n_validation": len(val), "backbone": result.config.backbone,
           "final_loss": last_loss(result.run_dir / "metrics.jsonl"),
           "knn20": knn_accuracy(tr_x, tr_y, va_x, va_y, n_classes, k=20),
           "knn20_random_init": knn_accuracy(r_tr, tr_y, r_va, va_y, n_classes, k=20),
           "knn20_tfidf": tfidf_knn(train, val, n_classes)}
    for fraction, n in ((0.01, 3), (0.1, 3)):
        draws = label_draws(train.labels, fraction, n, seed=args.seed)
        key = f"{fraction:g}"
        row[f"probe_{key}"] = probe(tr_x.float(), tr_y, va_x.float(), va_y, draws, positive)
        row[f"probe_random_{key}"] = probe(r_tr.float(), tr_y, r_va.float(), va_y, draws, positive)
        row[f"tfidf_{key}"] = tfidf_scores(train, val, draws, positive, n_classes)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"{args.name} ({args.views}, {len(train)}/{len(val)} train/val, {seconds:.0f}s): kNN20 {row['knn20']:.3f} "
          f"(random {row['knn20_random_init']:.3f}, tfidf {row['knn20_tfidf']:.3f})")
    for key in ("0.01", "0.1"):
        print(f"  {key}: probe acc {fmt(row[f'probe_{key}']['acc'])} F1 {fmt(row[f'probe_{key}']['f1'])} | random "
              f"acc {fmt(row[f'probe_random_{key}']['acc'])} F1 {fmt(row[f'probe_random_{key}']['f1'])} | tfidf acc "
              f"{fmt(row[f'tfidf_{key}']['acc'])} F1 {fmt(row[f'tfidf_{key}']['f1'])}")


if __name__ == "__main__":
    main()
