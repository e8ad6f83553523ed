"""The subcommands after the command line has been parsed: pretrain, knn, linear, finetune, supervised,
distill, embed, pipeline (predict and similar are in contrastive.apply, export in contrastive.export).

Each builds its config from the typed flags over the dataclass defaults (contrastive.fields),
loads what it needs, checks it fits, calls the library and prints one result line; user
mistakes raise ContrastiveError, which the CLI prints as one line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from contrastive import distributed
from contrastive.config import KnnConfig, PretrainConfig
from contrastive.device import pick_device
from contrastive.errors import ContrastiveError
from contrastive.evaluate.classifier import load_classifier, random_classifier, reader_of, save_classifier
from contrastive.evaluate.distill import distill
from contrastive.evaluate.features import extract_features
from contrastive.evaluate.finetune import finetune, supervised_baseline
from contrastive.evaluate.fit import DISTILL, FINETUNE, SUPERVISED, Budget
from contrastive.evaluate.knn import encoder_knn_accuracy
from contrastive.evaluate.pretrained import check_compatible, load_pretrained
from contrastive.evaluate.probe import linear_probe
from contrastive.fields import build, given, given_shared
from contrastive.methods import METHODS
from contrastive.modality import MODALITIES, load_data, option_classes, reader_for
from contrastive.run_state import data_record
from contrastive.subsets import balanced_subset


def method_option_classes() -> dict[str, type]:
    return {name: module.Options for name, module in METHODS.items()}


def pretrain_config(args: argparse.Namespace, exclude=()) -> dict:
    """The typed pretraining flags as overrides of PretrainConfig, with the method's and the data's options."""
    overrides = given(args, PretrainConfig, exclude=exclude)
    method_options, data_options = given_shared(args, method_option_classes()), given_shared(args, option_classes())
    if method_options:
        overrides["method_options"] = method_options
    if data_options:
        overrides["data_options"] = data_options
    return overrides


def cmd_pretrain(args: argparse.Namespace) -> int:
    from contrastive.train import pretrain

    result = pretrain(build(PretrainConfig, None, pretrain_config(args)))
    if not distributed.is_main():
        return 0
    print(f"run folder: {result.run_dir}")
    if result.knn_final is not None:
        before = f"{result.knn_random_init:.4f}" if result.knn_random_init is not None else "n/a"
        print(f"kNN top-1 (k={result.config.knn.k}): random-init encoder {before} -> pretrained {result.knn_final:.4f}")
    print(f"{result.steps} steps in {result.seconds:.0f} s")
    return 0


# --- evaluation ------------------------------------------------------------------------------

def reading_options(args: argparse.Namespace) -> dict:
    """The typed options that reading data takes (e.g. skip unreadable files); other flags of the same
    name on a command (a training budget's --augment) are not data options."""
    names = {name for modality in MODALITIES.values() for name in modality.load_options}
    return {k: v for k, v in given_shared(args, option_classes()).items() if k in names}


def labelled_data(args: argparse.Namespace):
    data = load_data(getattr(args, "data", None), reading_options(args))
    if data.test is None or not data.train.has_labels:
        raise ContrastiveError(f"{data.name} has no labels or no test split; this command needs "
                               "folder:DIR with DIR/train/<class>/ and DIR/test/<class>/")
    return data


def pretrained_and_data(args):
    pre = load_pretrained(args.checkpoint)
    data = labelled_data(args)
    check_compatible(pre, data)
    return pre, data


def seed_of(args) -> int:
    return getattr(args, "seed", PretrainConfig.seed)


def device_of(args) -> torch.device:
    return pick_device(getattr(args, "device", PretrainConfig.device))


def labelled_subset(data, fraction: float, seed: int, out: Path | None = None):
    idx = balanced_subset(data.train.labels, fraction, seed)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "labeled-indices.json").write_text(json.dumps({"fraction": fraction, "seed": seed,
                                                               "indices": idx.tolist()}))
    return data.train.subset(idx), idx


def cmd_knn(args: argparse.Namespace) -> int:
    pre, data = pretrained_and_data(args)
    knn = build(KnnConfig, None, given(args, KnnConfig, exclude=("every",)))
    device = device_of(args)
    acc = encoder_knn_accuracy(pre.encoder.to(device), data.train, data.test, data.num_classes, pre.reader, device,
                               knn.k, knn.temperature)
    print(f"kNN top-1 (k={knn.k}, T={knn.temperature}) on {data.name} test: {acc:.4f}")
    return 0


def cmd_linear(args: argparse.Namespace) -> int:
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


def save_to(model, out: Path | None, data, fraction: float, idx, what: str) -> None:
    if out is not None:
        path = save_classifier(model, out / "classifier.pt", data=data_record(data), label_fraction=fraction,
                               indices=idx)
        print(f"{what}: {path}")


def cmd_finetune(args: argparse.Namespace) -> int:
    pre, data = pretrained_and_data(args)
    out = Path(args.out) if args.out else None
    labeled, idx = labelled_subset(data, args.label_fraction, seed_of(args), out)
    model, acc = finetune(pre, labeled, data.test, data.num_classes, from_head_layer=args.from_head_layer,
                          budget=build(Budget, FINETUNE, given(args, Budget)), device=device_of(args),
                          seed=seed_of(args))
    print(f"fine-tuned on {len(idx)} labels ({args.label_fraction:g}): test top-1 {acc:.4f}")
    save_to(model, out, data, args.label_fraction, idx, "classifier")
    return 0


def cmd_supervised(args: argparse.Namespace) -> int:
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


def cmd_distill(args: argparse.Namespace) -> int:
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


def cmd_embed(args: argparse.Namespace) -> int:
    pre, data = pretrained_and_data(args)
    items = data.train if args.split == "train" else data.test
    device = device_of(args)
    feats, labels = extract_features(pre.encoder.to(device), items, pre.reader, device)
    out = Path(args.out if args.out.endswith(".npy") else args.out + ".npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, feats.numpy())
    if items.has_labels:
        np.save(out.with_suffix(".labels.npy"), labels.numpy())
    if getattr(items, "paths", None) is not None:
        out.with_suffix(".paths.txt").write_text("\n".join(items.paths) + "\n")
    print(f"embeddings {tuple(feats.shape)} of {data.name} {args.split} -> {out}")
    return 0


def pipeline_config(args: argparse.Namespace):
    """The typed flags over the defaults, or over the --quick preset: a typed flag always wins."""
    from contrastive.pipeline import QUICK, PipelineConfig, matched_baseline

    overrides = matched_baseline(given(args, PipelineConfig, exclude=("pretrain",)))
    overrides["pretrain"] = pretrain_config(args, exclude=("out", "resume"))
    return build(PipelineConfig, QUICK if args.quick else PipelineConfig(), overrides)


def cmd_pipeline(args: argparse.Namespace) -> int:
    from contrastive.pipeline import run_pipeline

    run_pipeline(pipeline_config(args))
    return 0
