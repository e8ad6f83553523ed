"""The evaluation subcommands, each parser beside its handler: knn, linear (a frozen encoder), finetune,
supervised, distill (a classifier trained on labels or on a teacher), embed (the encoder's embeddings).

Each builds its settings from the typed flags over the dataclass defaults (contrastive.fields), loads
what it needs, checks it fits, calls the library and prints one result line; user mistakes raise
ContrastiveError, which the command line prints as one line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from contrastive import files
from contrastive.cli.flags import add_command, add_data_flags, device_of, reading_options, seed_of
from contrastive.config import KnnConfig, PretrainConfig
from contrastive.errors import ContrastiveError
from contrastive.evaluate.classifier import load_classifier, random_classifier, reader_of, save_classifier
from contrastive.evaluate.distill import distill
from contrastive.evaluate.features import extract_features
from contrastive.evaluate.finetune import finetune, supervised_baseline
from contrastive.evaluate.fit import DISTILL, FINETUNE, SUPERVISED, Budget
from contrastive.evaluate.knn import encoder_knn_accuracy
from contrastive.evaluate.pretrained import check_compatible, load_pretrained
from contrastive.evaluate.probe import linear_probe
from contrastive.fields import add_fields, build, given
from contrastive.modality import load_data, reader_for
from contrastive.run_state import data_record
from contrastive.subsets import balanced_subset

# The defaults of the flags written here (the others are dataclass fields and show their own).
LINEAR_FRACTION = 1.0  # the linear probe on every training label unless told otherwise
DISTILL_TEMPERATURE = 1.0  # SimCLRv2's eq. 2 at T 1 (the pipeline chooses T on validation)
DISTILL_ALPHA = 0.0  # the teacher's predictions alone: labels unused, SimCLRv2's own distillation
EMBED_SPLIT = "test"
CHECKPOINT_HELP = "a pretraining checkpoint (RUN/checkpoint-epochNNNN.pt)"


def add_parsers(sub) -> None:
    for add in (add_knn, add_linear, add_finetune, add_supervised, add_distill, add_embed):
        add(sub)


# --- what the subcommands share --------------------------------------------------------------

def add_fraction_arg(p: argparse.ArgumentParser, default: float | None) -> None:
    p.add_argument("--label-fraction", type=float, default=default, required=default is None,
                   help="fraction of the training labels to use, in (0, 1]; drawn class-balanced with --seed "
                        "(SimCLRv2 reports 0.01 and 0.1)")


def labelled_data(args: argparse.Namespace):
    data = load_data(getattr(args, "data", None), reading_options(args))
    if data.test is None or not data.train.has_labels:
        raise ContrastiveError(f"{data.name} has no labels or no test split; this command needs "
                               "folder:DIR with DIR/train/<class>/ and DIR/test/<class>/")
    return data


def pretrained_and_data(args: argparse.Namespace):
    pre = load_pretrained(args.checkpoint)
    data = labelled_data(args)
    check_compatible(pre, data)
    return pre, data


def labelled_subset(data, fraction: float, seed: int, out: Path | None = None):
    idx = balanced_subset(data.train.labels, fraction, seed)
    if out is not None:
        files.write_atomic(out / "labeled-indices.json", json.dumps({"fraction": fraction, "seed": seed,
                                                                     "indices": idx.tolist()}))
    return data.train.subset(idx), idx


def save_to(model, out: Path | None, data, fraction: float, idx, what: str) -> None:
    if out is not None:
        path = save_classifier(model, out / "classifier.pt", data=data_record(data), label_fraction=fraction,
                               indices=idx)
        print(f"{what}: {path}")


# --- knn -------------------------------------------------------------------------------------

def add_knn(sub) -> None:
    p = add_command(sub, "knn", "weighted kNN top-1 (cosine) of a frozen pretrained encoder")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    add_fields(p, KnnConfig, exclude=("every",))
    add_data_flags(p, keep=("data", "device"))
    p.set_defaults(func=run_knn)


def run_knn(args: argparse.Namespace) -> int:
    pre, data = pretrained_and_data(args)
    knn = build(KnnConfig, None, given(args, KnnConfig, exclude=("every",)))
    device = device_of(args)
    acc = encoder_knn_accuracy(pre.encoder.to(device), data.train, data.test, data.num_classes, pre.reader, device,
                               knn.k, knn.temperature)
    print(f"kNN top-1 (k={knn.k}, T={knn.temperature}) on {data.name} test: {acc:.4f}")
    return 0


# --- linear ----------------------------------------------------------------------------------

def add_linear(sub) -> None:
    p = add_command(sub, "linear", "linear probe on frozen features (features computed once)")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    add_fraction_arg(p, LINEAR_FRACTION)
    add_data_flags(p)
    p.set_defaults(func=run_linear)


def run_linear(args: argparse.Namespace) -> int:
    pre, data = pretrained_and_data(args)
    device = device_of(args)
    labeled, idx = labelled_subset(data, args.label_fraction, seed_of(args))
    before = {k: v.clone() for k, v in pre.encoder.state_dict().items()}
    acc = linear_probe(pre.encoder.to(device), labeled, data.test, data.num_classes, pre.reader, device=device,
                       seed=seed_of(args))
    after = pre.encoder.state_dict()
    if any(not torch.equal(before[k], after[k].to(before[k].device)) for k in before):
        raise RuntimeError("the linear probe changed the encoder's weights; this is a bug, please report it")
    print(f"linear probe on {len(idx)} labels ({args.label_fraction:g}), frozen encoder unchanged: "
          f"test top-1 {acc:.4f}")
    return 0


# --- finetune --------------------------------------------------------------------------------

def add_finetune(sub) -> None:
    p = add_command(sub, "finetune", "fine-tune the whole pretrained encoder on a labelled subset")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    add_fraction_arg(p, None)
    p.add_argument("--no-head-layer", dest="from_head_layer", action="store_false",
                   help="start from the encoder alone instead of the head layer the checkpoint names (SimCLRv2 "
                        "sec. 2.3 fine-tunes from the first layer of SimCLR's head)")
    p.add_argument("--out", default=None, help="folder for the fine-tuned classifier and the subset's indices")
    add_fields(p, Budget, base=FINETUNE)
    add_data_flags(p)
    p.set_defaults(func=run_finetune)


def run_finetune(args: argparse.Namespace) -> int:
    pre, data = pretrained_and_data(args)
    out = Path(args.out) if args.out else None
    labeled, idx = labelled_subset(data, args.label_fraction, seed_of(args), out)
    model, acc = finetune(pre, labeled, data.test, data.num_classes, from_head_layer=args.from_head_layer,
                          budget=build(Budget, FINETUNE, given(args, Budget)), device=device_of(args),
                          seed=seed_of(args))
    print(f"fine-tuned on {len(idx)} labels ({args.label_fraction:g}): test top-1 {acc:.4f}")
    save_to(model, out, data, args.label_fraction, idx, "classifier")
    return 0


# --- supervised ------------------------------------------------------------------------------

def add_supervised(sub) -> None:
    p = add_command(sub, "supervised", "baseline: the same architecture from random init on the same labelled subset")
    add_fraction_arg(p, None)
    p.add_argument("--backbone", default=None, help="default: what pretraining picks for this data")
    p.add_argument("--out", default=None, help="folder for the trained classifier")
    add_fields(p, Budget, base=SUPERVISED)
    add_data_flags(p)
    p.set_defaults(func=run_supervised)


def run_supervised(args: argparse.Namespace) -> int:
    data = labelled_data(args)
    # The backbone and the inputs pretraining would resolve for this data, in their one place.
    arch = {"backbone": args.backbone} if args.backbone else {}
    cfg = build(PretrainConfig, None, {**arch, "data_options": reading_options(args)}).resolve(data)
    reader = reader_for(data, cfg.data_options)
    out = Path(args.out) if args.out else None
    labeled, idx = labelled_subset(data, args.label_fraction, seed_of(args), out)
    model, acc = supervised_baseline(reader, cfg.backbone, data.num_classes, labeled, data.test,
                                     budget=build(Budget, SUPERVISED, given(args, Budget)), device=device_of(args),
                                     seed=seed_of(args))
    print(f"supervised {cfg.backbone} from random init on {len(idx)} labels ({args.label_fraction:g}): "
          f"test top-1 {acc:.4f}")
    save_to(model, out, data, args.label_fraction, idx, "classifier")
    return 0


# --- distill ---------------------------------------------------------------------------------

def add_distill(sub) -> None:
    p = add_command(sub, "distill", "SimCLRv2 distillation of a fine-tuned teacher into a student on unlabeled data")
    p.add_argument("--teacher", required=True, help="a classifier written by `contrastive finetune --out`")
    p.add_argument("--student", default=None, help="student backbone; default: the teacher's (self-distillation)")
    p.add_argument("--temperature", type=float, default=DISTILL_TEMPERATURE,
                   help="softmax temperature of SimCLRv2's eq. 2 (the pipeline chooses it on validation)")
    p.add_argument("--alpha", type=float, default=DISTILL_ALPHA,
                   help="weight of cross-entropy on the teacher's labelled subset (0: labels unused, SimCLRv2 default)")
    p.add_argument("--out", default=None, help="folder for the student classifier")
    add_fields(p, Budget, base=DISTILL)
    add_data_flags(p)
    p.set_defaults(func=run_distill)


def run_distill(args: argparse.Namespace) -> int:
    teacher, meta = load_classifier(args.teacher)
    data = labelled_data(args)
    reader = reader_of(teacher)
    reader.check(data, f"teacher {args.teacher}")
    if data.num_classes != meta["data"]["num_classes"]:
        raise ContrastiveError(f"teacher {args.teacher} was trained on {meta['data']['name']} "
                               f"({meta['data']['num_classes']} classes), not {data.name} ({data.num_classes}); "
                               f"pass the --data it was fine-tuned on")
    student_name = args.student or meta["backbone"]
    student = random_classifier(reader, student_name, data.num_classes, seed=seed_of(args) + 1)
    mask = torch.as_tensor(meta["indices"]) if args.alpha > 0 else None
    student, acc = distill(teacher, student, data.train, data.test, reader, temperature=args.temperature,
                           alpha=args.alpha, labeled_mask=mask, budget=build(Budget, DISTILL, given(args, Budget)),
                           device=device_of(args), seed=seed_of(args))
    print(f"distilled {meta['backbone']} teacher into {student_name} on {len(data.train)} unlabeled items: "
          f"test top-1 {acc:.4f}")
    save_to(student, Path(args.out) if args.out else None, data, meta["label_fraction"],
            torch.as_tensor(meta["indices"]), "student")
    return 0


# --- embed -----------------------------------------------------------------------------------

def add_embed(sub) -> None:
    p = add_command(sub, "embed", "write the encoder's embeddings of a dataset to .npy")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--out", required=True, help="output file FILE.npy; labels go to FILE.labels.npy, file names to "
                                                "FILE.paths.txt")
    p.add_argument("--split", choices=("train", "test"), default=EMBED_SPLIT, help="which split to embed")
    add_data_flags(p, keep=("data", "device"))
    p.set_defaults(func=run_embed)


def run_embed(args: argparse.Namespace) -> int:
    pre, data = pretrained_and_data(args)
    items = data.train if args.split == "train" else data.test
    device = device_of(args)
    feats, labels = extract_features(pre.encoder.to(device), items, pre.reader, device)
    out = Path(args.out if args.out.endswith(".npy") else args.out + ".npy")
    arrays = {out: feats.numpy()}
    if items.has_labels:
        arrays[out.with_suffix(".labels.npy")] = labels.numpy()
    written = {path: (lambda tmp, a=a: np.save(tmp, a)) for path, a in arrays.items()}
    if getattr(items, "paths", None) is not None:
        text = ("\n".join(items.paths) + "\n").encode()
        written[out.with_suffix(".paths.txt")] = lambda tmp: tmp.write_bytes(text)
    files.write_all_atomic(written)  # the arrays and the paths belong together: all of them or none
    print(f"embeddings {tuple(feats.shape)} of {data.name} {args.split} -> {out}")
    return 0
