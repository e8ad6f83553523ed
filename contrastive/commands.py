"""The evaluation subcommands: knn, linear, finetune, supervised, distill, embed, pipeline.

Each loads what it needs, checks it fits, calls the evaluation functions and prints one
result line; user mistakes raise ContrastiveError, which the CLI prints as one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from contrastive.config import PretrainConfig
from contrastive.data import DataSplits, balanced_subset, load_data
from contrastive.errors import ContrastiveError
from contrastive.evaluate.classify import (DISTILL, FINETUNE, SUPERVISED, check_compatible, distill, finetune, linear_probe,
                                           load_pretrained, random_classifier, supervised_baseline)
from contrastive.evaluate.export import load_classifier, save_classifier
from contrastive.evaluate.features import extract_features
from contrastive.evaluate.knn import encoder_knn_accuracy
from contrastive.device import pick_device


def labelled_data(spec: str | None, seed: int) -> DataSplits:
    data = load_data(spec, seed=seed)
    if data.test is None or not data.train.has_labels:
        raise ContrastiveError(f"{data.name} has no labels or no test split; this command needs "
                               "folder:DIR with DIR/train/<class>/ and DIR/test/<class>/")
    return data


def pretrained_and_data(args):
    pre = load_pretrained(args.checkpoint)
    data = labelled_data(args.data, args.seed)
    check_compatible(pre, data.channels, data.name)
    return pre, data


def labelled_subset(data: DataSplits, fraction: float, seed: int, out: Path | None = None):
    idx = balanced_subset(data.train.labels, fraction, seed)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "labeled-indices.json").write_text(json.dumps({"fraction": fraction, "seed": seed,
                                                               "indices": idx.tolist()}))
    return data.train.subset(idx), idx


def budget(default, epochs: int | None):
    return default if epochs is None else dataclasses.replace(default, epochs=epochs)


def cmd_knn(args: argparse.Namespace) -> int:
    pre, data = pretrained_and_data(args)
    device = pick_device(args.device)
    acc = encoder_knn_accuracy(pre.encoder.to(device), data.train, data.test, data.num_classes,
                               pre.data["image_size"], data.channels, device, args.k, args.temperature)
    print(f"kNN top-1 (k={args.k}, T={args.temperature}) on {data.name} test: {acc:.4f}")
    return 0


def cmd_linear(args: argparse.Namespace) -> int:
    pre, data = pretrained_and_data(args)
    device = pick_device(args.device)
    labeled, idx = labelled_subset(data, args.label_fraction, args.seed)
    before = {k: v.clone() for k, v in pre.encoder.state_dict().items()}
    acc = linear_probe(pre.encoder.to(device), labeled, data.test, data.num_classes, pre.data["image_size"],
                       data.channels, device=device, seed=args.seed)
    after = pre.encoder.state_dict()
    if any(not torch.equal(before[k], after[k].to(before[k].device)) for k in before):
        raise RuntimeError("the linear probe changed the encoder's weights; this is a bug, please report it")
    print(f"linear probe on {len(idx)} labels ({args.label_fraction:g}), frozen encoder unchanged: "
          f"test top-1 {acc:.4f}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    pre, data = pretrained_and_data(args)
    out = Path(args.out) if args.out else None
    labeled, idx = labelled_subset(data, args.label_fraction, args.seed, out)
    model, acc = finetune(pre, labeled, data.test, data.num_classes, pre.data["image_size"], data.channels,
                          from_head_layer=args.from_head_layer, budget=budget(FINETUNE, args.epochs),
                          device=pick_device(args.device), seed=args.seed)
    print(f"fine-tuned on {len(idx)} labels ({args.label_fraction:g}): test top-1 {acc:.4f}")
    if out is not None:
        path = save_classifier(model, out / "classifier.pt", backbone=pre.config["backbone"],
                               cifar_stem=pre.config["cifar_stem"], data=pre.data, label_fraction=args.label_fraction,
                               indices=idx)
        print(f"classifier: {path}")
    return 0


def cmd_supervised(args: argparse.Namespace) -> int:
    data = labelled_data(args.data, args.seed)
    # The backbone and stem defaults of pretraining, resolved in their one place.
    arch = PretrainConfig(backbone=args.backbone).resolve(image_size=data.image_size, embedded=data.name == "mnist")
    backbone, cifar_stem = arch.backbone, arch.cifar_stem
    out = Path(args.out) if args.out else None
    labeled, idx = labelled_subset(data, args.label_fraction, args.seed, out)
    model, acc = supervised_baseline(backbone, data.channels, cifar_stem, data.num_classes, labeled,
                                     data.test, data.image_size, budget=budget(SUPERVISED, args.epochs),
                                     device=pick_device(args.device), seed=args.seed)
    print(f"supervised {backbone} from random init on {len(idx)} labels ({args.label_fraction:g}): test top-1 {acc:.4f}")
    if out is not None:
        meta = {"name": data.name, "channels": data.channels, "image_size": data.image_size,
                "num_classes": data.num_classes, "classes": list(data.classes)}
        path = save_classifier(model, out / "classifier.pt", backbone=backbone, cifar_stem=cifar_stem, data=meta,
                               label_fraction=args.label_fraction, indices=idx)
        print(f"classifier: {path}")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    teacher, meta = load_classifier(args.teacher)
    data = labelled_data(args.data, args.seed)
    if data.channels != meta["data"]["channels"] or data.num_classes != meta["data"]["num_classes"]:
        raise ContrastiveError(f"teacher {args.teacher} was trained on {meta['data']['name']} "
                               f"({meta['data']['num_classes']} classes, {meta['data']['channels']} channels), "
                               f"not {data.name}; pass the --data it was fine-tuned on")
    student_name = args.student or meta["backbone"]
    student = random_classifier(student_name, data.channels, meta["cifar_stem"], data.num_classes, seed=args.seed + 1)
    mask = torch.as_tensor(meta["indices"]) if args.alpha > 0 else None
    student, acc = distill(teacher, student, data.train, data.test, meta["data"]["image_size"], data.channels,
                           temperature=args.temperature, alpha=args.alpha, labeled_mask=mask,
                           budget=budget(DISTILL, args.epochs), device=pick_device(args.device), seed=args.seed)
    print(f"distilled {meta['backbone']} teacher into {student_name} on {len(data.train)} unlabeled images: "
          f"test top-1 {acc:.4f}")
    if args.out:
        path = save_classifier(student, Path(args.out) / "classifier.pt", backbone=student_name,
                               cifar_stem=meta["cifar_stem"], data=meta["data"], label_fraction=meta["label_fraction"],
                               indices=torch.as_tensor(meta["indices"]))
        print(f"student: {path}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    pre, data = pretrained_and_data(args)
    images = data.train if args.split == "train" else data.test
    feats, labels = extract_features(pre.encoder.to(pick_device(args.device)), images, pre.data["image_size"],
                                     data.channels, pick_device(args.device))
    out = Path(args.out if args.out.endswith(".npy") else args.out + ".npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, feats.numpy())
    if images.has_labels:
        np.save(out.with_suffix(".labels.npy"), labels.numpy())
    if images.paths is not None:
        out.with_suffix(".paths.txt").write_text("\n".join(images.paths) + "\n")
    print(f"embeddings {tuple(feats.shape)} of {data.name} {args.split} -> {out}")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from contrastive.pipeline import PipelineConfig, run_pipeline

    try:
        fractions = tuple(float(f) for f in args.fractions.split(","))
    except ValueError:
        raise ContrastiveError(f"--fractions must be comma-separated numbers, got '{args.fractions}'") from None
    cfg = PipelineConfig(method=args.method, data=args.data, backbone=args.backbone, student=args.student,
                         fractions=fractions, batch_size=args.batch_size, precision=args.precision,
                         device=args.device, seed=args.seed, out=args.out, quick=args.quick,
                         train_limit=args.train_limit, test_limit=args.test_limit)
    if args.epochs is not None:
        cfg.pretrain_epochs = args.epochs
    if args.finetune_epochs is not None:
        cfg.finetune = dataclasses.replace(cfg.finetune, epochs=args.finetune_epochs)
        cfg.supervised = dataclasses.replace(cfg.supervised, epochs=args.finetune_epochs)
    if args.distill_epochs is not None:
        cfg.distill = dataclasses.replace(cfg.distill, epochs=args.distill_epochs)
    if args.min_steps is not None:
        cfg.finetune = dataclasses.replace(cfg.finetune, min_steps=args.min_steps)
        cfg.supervised = dataclasses.replace(cfg.supervised, min_steps=args.min_steps)
    run_pipeline(cfg)
    return 0
