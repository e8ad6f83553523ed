"""Three checks a security engineer asks of a finished pipeline run on Juliet (issue 24), read from its folder.

1. Long functions. The encoder reads the first max_tokens tokens of a function, and Juliet puts a flaw's
   sink near the end. The test functions whose whole normalised token list (CodeSet.texts split on
   whitespace: a literal holding a space, ' ', counts as two) is longer than max_tokens are scored apart
   from the rest: PR-AUC of "vulnerable" and F1 at the threshold chosen on validation
   (contrastive.pipeline.scores.best_threshold, on the validation items the fraction's choices read), for
   the classifiers the run saved of each fraction's first draw (RUN/classifiers/{finetune,semi,distill}-
   <fraction>.pt, those present) and the TF-IDF baseline fitted on the same labels (the indices the
   classifier files hold). The "all" slice is the whole test split: it reads what results.json reports of
   that draw, which checks that the splits were rebuilt right.
2. Held-out CWEs. K CWEs (--held-out-cwes, else the --largest 3 by test functions) get no labels: a
   class-balanced draw of 1% (--label-fraction) of the training functions of the other CWEs trains TF-IDF +
   logistic regression (`tfidf`) and a linear probe on the pretrained encoder's frozen features (`linear`,
   the pipeline's own), with the other CWEs' validation functions to choose C and the F1 threshold on; the
   test is the held-out CWEs' test functions. The in-distribution reference: the same two columns on the
   same test functions, from a 1% draw of every training function (the held-out CWEs' labels in it) and
   every validation function. 3 draws (--draws), mean ± sd. The unlabelled pool (TF-IDF's vocabulary, and
   what pretraining read) is the whole training split in both.

3. Scaffolding. Juliet's flow variants wrap a fixed function's sink in never-taken guards (`if ( 0 )`,
   `globalReturnsFalse ( )`, `globalFalse`, `GLOBAL_CONST_FALSE`, `!= 5`) with `printLine ( "STR" )` in the dead
   branch, and more `else`; the normaliser keeps these library names. Test functions are sliced into "marked"
   (a never-taken guard or a printLine of a string) and "plain" (neither), and each fraction's saved classifiers
   and TF-IDF are scored on both; a "scaffolding" column, class-weighted logistic regression on the six marker
   counts and the log length alone (C chosen on the fraction's validation items), trained on the same labels,
   says how far the scaffolding alone gets.

The splits are the run's own: the data read with the checkpoint's data options and vocabulary, then
contrastive.pipeline.stages.split_data with results.json's validation fraction and split sizes.

    python benchmarks/juliet_slices.py RUN [--held-out-cwes 121,122,...] [--out benchmarks/results/juliet_slices]

writes OUT.json and OUT.md, each with the command that made it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler

from contrastive.checkpoint import list_checkpoints
from contrastive.code.baselines import chosen_logistic, class_probs, tfidf
from contrastive.config import PretrainConfig
from contrastive.errors import ContrastiveError
from contrastive.evaluate.classifier import load_classifier, reader_of
from contrastive.evaluate.pretrained import check_compatible, load_pretrained
from contrastive.evaluate.probe import fit_linear_probe
from contrastive.files import write_atomic, write_json
from contrastive.modality import load_data
from contrastive.pipeline.config import PipelineConfig
from contrastive.pipeline.fits import network_predictor
from contrastive.pipeline.scores import best_threshold, binary_scores
from contrastive.pipeline.stages import Splits, split_data
from contrastive.protocol import capped_validation, label_draws, mean_sd, summary

OUT = "benchmarks/results/juliet_slices"
NETWORKS = ("finetune", "semi", "distill")  # the first draw's classifiers the pipeline may save per fraction
METRICS = ("pr_auc", "f1")


def log(message: str) -> None:
    print(message, file=sys.stderr)


# --- the run, rebuilt ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Run:
    """A finished pipeline run: its folder, results.json, pretrained encoder, settings and splits."""

    path: Path
    results: dict
    pretrained: object  # contrastive.evaluate.pretrained.Pretrained
    cfg: PipelineConfig
    splits: Splits

    @property
    def positive(self) -> int:
        return self.splits.data.positive_class

    @property
    def n_classes(self) -> int:
        return self.splits.data.num_classes

    @property
    def seed(self) -> int:
        return self.cfg.pretrain.seed


def pipeline_config(results: dict, pre, run_dir: Path, device: str) -> PipelineConfig:
    """What split_data reads, from what the run left: the checkpoint's config (seed, data options) and
    results.json's protocol. The split sizes serve as limits: a limit of n draws the same n items the run's
    own limit did (contrastive.subsets.limit_items depends on the size alone), and all items where n is all."""
    p = results["protocol"]
    pretrain = dataclasses.replace(PretrainConfig.from_dict(pre.config), device=device,
                                   train_limit=p["n_train"] + p["n_validation"])
    return PipelineConfig(pretrain=pretrain, validation=p["validation"], test_limit=p["n_test"], out=str(run_dir))


def check_sizes(splits: Splits, protocol: dict) -> None:
    """The rebuilt splits hold as many items as the run's did, or the run cannot be read back."""
    sizes = (len(splits.train), len(splits.val), len(splits.test))
    if sizes != (protocol["n_train"], protocol["n_validation"], protocol["n_test"]):
        raise ContrastiveError(f"rebuilt splits hold {sizes} items, the run's {protocol['n_train']}, "
                               f"{protocol['n_validation']}, {protocol['n_test']}: the data has changed")


def open_run(run_dir: Path, device: str) -> Run:
    """The run's data read as its encoder reads it (vocabulary, length), split as the pipeline split it."""
    if not (run_dir / "results.json").is_file():
        raise ContrastiveError(f"{run_dir} holds no results.json; pass the --out folder of a finished pipeline run")
    results = json.loads((run_dir / "results.json").read_text())
    checkpoints = list_checkpoints(run_dir / "pretrain")
    if not checkpoints:
        raise ContrastiveError(f"{run_dir / 'pretrain'} holds no checkpoint; pass a finished pipeline run")
    pre = load_pretrained(checkpoints[0])
    cfg = pipeline_config(results, pre, run_dir, device)
    data = load_data(results["dataset"], cfg.pretrain.data_options, inputs=pre.reader.inputs)
    check_compatible(pre, data)
    if data.positive_class is None:
        raise ContrastiveError(f"{data.name} has no vulnerable class; these checks need a run of --task vulnerable")
    splits = split_data(cfg, data, log, time.time())
    check_sizes(splits, results["protocol"])
    pre.encoder.to(splits.device)
    return Run(run_dir, results, pre, cfg, splits)


# --- scores --------------------------------------------------------------------------------

def counts(labels: torch.Tensor, positive: int) -> dict:
    """Functions, flawed ones, their share, and F1 and PR-AUC of calling every one vulnerable (results.Row.floor;
    None without a flawed function)."""
    n, flawed = len(labels), int((labels == positive).sum())
    share = flawed / n if n else None
    return {"functions": n, "flawed": flawed, "flawed_share": share,
            "floor_f1": 2 * share / (1 + share) if flawed else None, "floor_pr_auc": share if flawed else None}


def scores(probs, labels: torch.Tensor, positive: int, threshold: float) -> dict:
    """PR-AUC and F1 of the vulnerable class (scores.binary_scores); None for both without a flawed function."""
    if not (labels == positive).any():
        return dict.fromkeys(METRICS)
    return binary_scores(probs, labels, positive, threshold)


def threshold(predict, val, positive: int) -> float:
    """The F1 threshold of a predictor, chosen on validation as the pipeline chooses it."""
    return best_threshold(predict(val)[:, positive], val.labels.numpy() == positive)


def summaries(values: list[dict]) -> dict:
    """Per metric, mean, sd and per-draw values (contrastive.protocol.summary); None where a draw has none."""
    return {m: None if any(v[m] is None for v in values) else summary([v[m] for v in values]) for m in METRICS}


# --- 1. long functions -----------------------------------------------------------------------

def slice_masks(test, max_tokens: int) -> dict[str, torch.Tensor]:
    """bool (N,) per slice: long (the whole token list exceeds max_tokens: the encoder saw it cut), rest, all."""
    long = torch.tensor([len(text.split()) > max_tokens for text in test.texts], dtype=torch.bool)
    return {"long": long, "rest": ~long, "all": torch.ones_like(long)}


def saved_networks(run: Run, fraction: str) -> tuple[dict, list[int] | None]:
    """(name -> predictor of each classifier saved for the fraction, the labelled training indices they hold)."""
    columns, indices = {}, None
    for name in NETWORKS:
        path = run.path / "classifiers" / f"{name}-{fraction}.pt"
        if not path.is_file():
            continue
        model, meta = load_classifier(path)
        reader_of(model).check(run.splits.data, path)
        if indices is not None and meta["indices"] != indices:
            raise ContrastiveError(f"{path} holds other labelled indices than the fraction's other classifiers")
        columns[name], indices = network_predictor(model.to(run.splits.device), reader_of(model),
                                                   run.splits.device), meta["indices"]
    return columns, indices


def fraction_validation(run: Run, fraction: str):
    """The validation items the fraction's choices and thresholds read: as many as results.json's labels_used
    says beyond the draw's labels (capped_validation: the run's "draw" rule, or all of them)."""
    row, val = run.results["label_fractions"][fraction], run.splits.val
    n = row.get("labels_used", row["n_labels"] + len(val)) - row["n_labels"]
    return val.subset(capped_validation(val.labels, n, seed=run.seed))


def reported(run: Run, fraction: str, column: str) -> dict:
    """What results.json reports of the column's first draw on the whole test split."""
    row = run.results["label_fractions"][fraction]
    return {m: row.get(f"{m}_values", {}).get(column, [None])[0] for m in METRICS} | {
        "threshold": row.get("thresholds", {}).get(column, [None])[0]}


@dataclasses.dataclass(frozen=True)
class Predicted:
    """One label fraction's columns, each fitted and run on the test split once: column -> (its F1 threshold,
    chosen on validation; its test-split probabilities), with how many labels and validation items they read.
    Checks 1 and 3 slice the same predictions."""

    fraction: str
    labels: int
    validation_items: int
    columns: dict[str, tuple[float, np.ndarray]]


def predicted(run: Run, fraction: str) -> Predicted | None:
    """The saved classifiers of the fraction's first draw, and TF-IDF and the scaffolding rule (check 3) fitted on
    the labels they hold; None where the run saved no classifier for the fraction."""
    columns, indices = saved_networks(run, fraction)
    if indices is None:
        log(f"fraction {fraction}: no classifier saved in {run.path / 'classifiers'}; left out")
        return None
    train, val = run.splits.train, fraction_validation(run, fraction)
    labeled = train.subset(indices)
    columns["tfidf"] = tfidf(labeled, train, val, run.n_classes, run.seed, run.positive)
    columns["scaffolding"] = scaffolding_rule(labeled, val, run.n_classes, run.seed, run.positive)
    test = run.splits.test
    return Predicted(fraction, len(indices), len(val),
                     {name: (threshold(p, val, run.positive), p(test)) for name, p in columns.items()})


def sliced(run: Run, found: Predicted, masks: dict, columns: list[str]) -> dict:
    """`columns` of one fraction, each with its threshold and its scores on every slice of the test split."""
    test, positive = run.splits.test, run.positive
    scored = {}
    for name in columns:
        t, probs = found.columns[name]
        out = {s: scores(probs[mask.numpy()], test.labels[mask], positive, t) for s, mask in masks.items()}
        scored[name] = {"threshold": t, **out, "reported": reported(run, found.fraction, name)}
    return {"labels": found.labels, "validation_items": found.validation_items, "columns": scored}


def long_functions(run: Run, found: Predicted, masks: dict) -> dict:
    """Check 1 for one label fraction: the saved classifiers and TF-IDF on the same labels, slice by slice."""
    return sliced(run, found, masks, [c for c in found.columns if c != "scaffolding"])


# --- 3. scaffolding --------------------------------------------------------------------------

# Marker phrases in the normalised text (tokens joined by single spaces): Juliet's never-taken guards, the
# dead branch's printLine of a string, and else, counted by occurrence.
GUARDS = ("if ( 0 )", "globalReturnsFalse ( )", "globalFalse", "GLOBAL_CONST_FALSE", "!= 5")
MARKERS = (*GUARDS, 'printLine ( "STR" )', "else")


def marker_counts(texts: list[str]) -> np.ndarray:
    """float (N, len(MARKERS) + 1): each marker's count in each text, and log(1 + tokens)."""
    rows = []
    for text in texts:
        flat = " ".join(text.split())
        rows.append([flat.count(m) for m in MARKERS] + [math.log1p(len(flat.split()))])
    return np.asarray(rows, dtype=np.float64)


def scaffold_masks(test) -> dict[str, torch.Tensor]:
    """bool (N,) per slice: marked (a never-taken guard or a printLine of a string), plain (neither), all."""
    counts_ = marker_counts(test.texts)
    marked = torch.from_numpy(counts_[:, :len(GUARDS) + 1].sum(1) > 0)
    return {"marked": marked, "plain": ~marked, "all": torch.ones_like(marked)}


def scaffolding_rule(labeled, val, n_classes: int, seed: int, positive: int):
    """Class-weighted logistic regression on the marker counts and the length alone, C chosen on validation."""
    scale = StandardScaler().fit(marker_counts(labeled.texts))
    features = lambda items: scale.transform(marker_counts(items.texts))  # noqa: E731
    model, _ = chosen_logistic(features(labeled), labeled.labels.numpy(), features(val), val.labels.numpy(),
                               n_classes, seed, positive)
    return lambda items: class_probs(model, features(items), n_classes)


def scaffolding(run: Run, found: Predicted, masks: dict) -> dict:
    """Check 3 for one label fraction: the saved classifiers, TF-IDF and the scaffolding rule, marked / plain."""
    return sliced(run, found, masks, list(found.columns))


# --- 2. held-out CWEs ------------------------------------------------------------------------

def held_out_cwes(test, chosen: list[int] | None, k: int) -> list[int]:
    """The CWEs typed (each must have test functions), else the k with the most test functions."""
    sizes = Counter(test.cwes.tolist())
    if not chosen and k < 1:
        raise ContrastiveError(f"--largest must be at least 1, got {k}")
    if chosen:
        missing = [c for c in chosen if c not in sizes]
        if missing:
            raise ContrastiveError(f"no test function of CWE {missing}; the test split's CWEs: {sorted(sizes)}")
        return chosen
    return [c for c, _ in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def of_cwes(items, cwes: list[int], inside: bool = True):
    """The items whose CWE is (inside) or is not among `cwes`."""
    mask = torch.isin(items.cwes, torch.tensor(cwes, dtype=torch.int64))
    return items.subset(torch.nonzero(mask == inside).flatten())


def probe_columns(run: Run, labeled, val, seed: int) -> dict:
    """TF-IDF + logistic regression, and the linear probe on the pretrained encoder, fitted on `labeled`."""
    pre, device = run.pretrained, run.splits.device
    probe = fit_linear_probe(pre.encoder, labeled, run.n_classes, pre.reader, device=device)
    return {"tfidf": tfidf(labeled, run.splits.train, val, run.n_classes, seed, run.positive),
            "linear": network_predictor(probe, pre.reader, device)}


def setting(run: Run, labelled_from, val, test, fraction: float, draws: int) -> dict:
    """Both columns on `test` over label draws of `labelled_from`, thresholds on `val`: mean ± sd per metric."""
    per_column, sizes = {}, []
    for d, idx in enumerate(label_draws(labelled_from.labels, fraction, draws, seed=run.seed)):
        sizes.append(len(idx))
        for name, predict in probe_columns(run, labelled_from.subset(idx), val, run.seed + d).items():
            found = scores(predict(test), test.labels, run.positive, threshold(predict, val, run.positive))
            per_column.setdefault(name, []).append(found)
    return {"labels": sizes, "validation_items": len(val), "validation": counts(val.labels, run.positive),
            "columns": {name: summaries(values) for name, values in per_column.items()}}


def held_out(run: Run, cwes: list[int], fraction: float, draws: int) -> dict:
    """Check 2: labels of the other CWEs only, then every CWE's labels (the reference); the held-out CWEs' test."""
    s = run.splits
    test = of_cwes(s.test, cwes)
    return {"cwes": cwes, "label_fraction": fraction, "draws": draws,
            "test": counts(test.labels, run.positive) | {"per_cwe": per_cwe(test, run.positive)},
            "held_out": setting(run, of_cwes(s.train, cwes, False), of_cwes(s.val, cwes, False), test, fraction,
                                draws),
            "in_distribution": setting(run, s.train, s.val, test, fraction, draws)}


def per_cwe(test, positive: int) -> dict:
    return {str(c): counts(test.labels[test.cwes == c], positive) for c in sorted(set(test.cwes.tolist()))}


# --- the report ------------------------------------------------------------------------------

def num(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def stat(s: dict | None) -> str:
    return "n/a" if s is None else mean_sd(s)


def slices_markdown(fraction: str, found: dict, sizes: dict) -> list[str]:
    """One fraction's table of check 1: a row per column, PR-AUC and F1 per slice; the floor last."""
    names = list(sizes)
    lines = [f"### Labels {float(fraction):.0%}: {found['labels']} labels (the first draw), thresholds on "
             f"{found['validation_items']} validation functions", "",
             "| column | threshold | " + " | ".join(f"{n} PR-AUC | {n} F1" for n in names) + " | results.json "
             "PR-AUC / F1 (all) |", "| --- " * (3 + 2 * len(names)) + "|"]
    for column, c in found["columns"].items():
        cells = " | ".join(f"{num(c[n]['pr_auc'])} | {num(c[n]['f1'])}" for n in names)
        r = c["reported"]
        lines.append(f"| {column} | {num(c['threshold'])} | {cells} | {num(r['pr_auc'])} / {num(r['f1'])} |")
    floor = " | ".join(f"{num(sizes[n]['floor_pr_auc'])} | {num(sizes[n]['floor_f1'])}" for n in names)
    return lines + [f"| floor: always vulnerable | | {floor} | |", ""]


def scaffolding_markdown(report: dict) -> list[str]:
    """Check 3: the slices' sizes, then one table per fraction (the same layout as check 1)."""
    sizes = report["scaffold_slices"]
    lines = ["## Scaffolding: functions with and without Juliet's never-taken guards", "",
             "marked: a never-taken guard (" + ", ".join(f"`{g}`" for g in GUARDS)
             + ") or `printLine ( \"STR\" )`; "
             "plain: neither. The `scaffolding` column: class-weighted logistic regression on the counts of those "
             "and of `else`, and the log length, on the same labels. Test slices: "
             + "; ".join(f"{n} {s['functions']} functions, {s['flawed']} flawed ({num(s['flawed_share'])})"
                         for n, s in sizes.items()) + ".", ""]
    for fraction, found in report["scaffolding"].items():
        lines += slices_markdown(fraction, found, sizes)
    return lines


def held_out_markdown(h: dict) -> list[str]:
    """Check 2's table: each column held out beside its in-distribution reference, and the drop."""
    t, ho, ref = h["test"], h["held_out"], h["in_distribution"]
    lines = [f"## Held-out CWEs: {', '.join(f'CWE{c}' for c in h['cwes'])}", "",
             f"Test: {t['functions']} functions of these CWEs, {t['flawed']} flawed ({num(t['flawed_share'])}); "
             f"always-vulnerable floor F1 {num(t['floor_f1'])}, PR-AUC {num(t['floor_pr_auc'])}. "
             f"{h['label_fraction']:.0%} labels, {h['draws']} draws (mean ± sd): held out "
             f"{ho['labels']} labels of the other CWEs, thresholds and C on {ho['validation_items']} validation "
             f"functions of the other CWEs; in distribution {ref['labels']} labels of every CWE, "
             f"{ref['validation_items']} validation functions. Drop: in distribution minus held out.", "",
             "| column | held-out PR-AUC | held-out F1 | in-distribution PR-AUC | in-distribution F1 | "
             "drop PR-AUC | drop F1 |", "| --- " * 7 + "|"]
    for column in ho["columns"]:
        a, b = ho["columns"][column], ref["columns"][column]
        drops = [num(b[m]["mean"] - a[m]["mean"]) if a[m] and b[m] else "n/a" for m in METRICS]
        lines.append(f"| {column} | {stat(a['pr_auc'])} | {stat(a['f1'])} | {stat(b['pr_auc'])} | "
                     f"{stat(b['f1'])} | {' | '.join(drops)} |")
    per = ", ".join(f"CWE{c} {v['functions']} ({v['flawed']} flawed)" for c, v in t["per_cwe"].items())
    return lines + ["", f"Per CWE: {per}.", ""]


def markdown(report: dict) -> str:
    """OUT.md: the command, the splits, check 1 per fraction, check 3 per fraction, check 2."""
    sizes, max_tokens = report["slices"], report["max_tokens"]
    lines = ["# Juliet: long functions, scaffolding and held-out CWEs (issue 24)", "", "```", report["command"],
             "```", "",
             f"Run {report['run']} ({report['dataset']}, backbone {report['backbone']}): "
             f"{report['splits']['train']} training, {report['splits']['validation']} validation, "
             f"{report['splits']['test']} test functions; {report['when']}.", "",
             f"## Long functions: more than {max_tokens} tokens, the encoder's cut", "",
             "Test slices: " + "; ".join(f"{n} {s['functions']} functions, {s['flawed']} flawed "
                                         f"({num(s['flawed_share'])})" for n, s in sizes.items()) + ".", ""]
    for fraction, found in report["long_functions"].items():
        lines += slices_markdown(fraction, found, sizes)
    if not report["long_functions"]:
        lines += ["No label fraction of the run has a classifier saved: nothing scored.", ""]
    lines += scaffolding_markdown(report) if "scaffolding" in report else []
    return "\n".join(lines + held_out_markdown(report["held_out_cwes"]))


# --- the command ---------------------------------------------------------------------------

def cwe_list(text: str) -> list[int]:
    return [int(c.strip().upper().removeprefix("CWE")) for c in text.split(",") if c.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a finished pipeline run folder on juliet:DIR (--task vulnerable)")
    p.add_argument("--out", default=OUT, help=f"writes OUT.json and OUT.md (default {OUT})")
    p.add_argument("--held-out-cwes", type=cwe_list, default=None,
                   help="CWEs to hold out in check 2, comma-separated, e.g. 121,122 or CWE121,CWE122 (default: the "
                        "--largest ones)")
    p.add_argument("--largest", type=int, default=3,
                   help="without --held-out-cwes: hold out this many CWEs, those with the most test functions "
                        "(default 3)")
    p.add_argument("--label-fraction", type=float, default=0.01,
                   help="check 2's labels: a class-balanced draw of this share of the other CWEs' training "
                        "functions (of every training function for the reference) (default 0.01)")
    p.add_argument("--draws", type=int, default=3, help="check 2's label draws, seeded from the run's seed (default 3)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto (default cpu)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default 0: torch's own choice)")
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        run_checks(parser().parse_args(argv), argv)
    except ContrastiveError as e:
        sys.exit(f"error: {e}")


def run_checks(args: argparse.Namespace, argv: list[str]) -> None:
    """Both checks on the run, written to OUT.json and OUT.md."""
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = f"CONTRASTIVE_CACHE={os.environ['CONTRASTIVE_CACHE']} " if "CONTRASTIVE_CACHE" in os.environ else ""
    found = {"command": f"{cache}python benchmarks/juliet_slices.py {shlex.join(argv)}",
             "when": time.strftime("%Y-%m-%d %H:%M"), "run": str(args.run)}
    found |= checks(open_run(args.run, args.device), args)
    out = Path(args.out)
    write_json(out.with_name(out.name + ".json"), found)
    write_atomic(out.with_name(out.name + ".md"), markdown(found))
    log(f"wrote {out}.json and {out}.md")


def checks(run: Run, args: argparse.Namespace) -> dict:
    """The splits' sizes, the slices, checks 1 and 3 per fraction (on one fit of each column), check 2."""
    test, max_tokens = run.splits.test, run.pretrained.reader.inputs["max_tokens"]
    masks, scaffold = slice_masks(test, max_tokens), scaffold_masks(test)
    found = [p for p in (predicted(run, f) for f in run.results["label_fractions"]) if p is not None]
    cwes = held_out_cwes(test, args.held_out_cwes, args.largest)
    return {"dataset": run.splits.data.name, "backbone": run.pretrained.record["backbone"], "max_tokens": max_tokens,
            "splits": {"train": len(run.splits.train), "validation": len(run.splits.val), "test": len(test)},
            "slices": {n: counts(test.labels[m], run.positive) for n, m in masks.items()},
            "long_functions": {p.fraction: long_functions(run, p, masks) for p in found},
            "scaffold_slices": {n: counts(test.labels[m], run.positive) for n, m in scaffold.items()},
            "scaffolding": {p.fraction: scaffolding(run, p, scaffold) for p in found},
            "held_out_cwes": held_out(run, cwes, args.label_fraction, args.draws)}


if __name__ == "__main__":
    main()
