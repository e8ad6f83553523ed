"""Saving and loading trained classifiers (fine-tuned teachers, students, baselines).

A classifier file holds its weights and what is needed to rebuild it: backbone name,
stem, neck width, the data it was trained on and the labelled subset it saw. It is
written atomically and read with weights_only=True, like every checkpoint here.
"""

from __future__ import annotations

from pathlib import Path

import torch

from contrastive.backbones import build_backbone
from contrastive.checkpoint import load_checkpoint, save_atomic
from contrastive.errors import ContrastiveError
from contrastive.evaluate.classify import Classifier, out_features
from contrastive.heads import simclr_head

KIND = "classifier"


def save_classifier(model: Classifier, path: str | Path, *, backbone: str, cifar_stem: bool, data: dict,
                    label_fraction: float, indices: torch.Tensor) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {"kind": KIND, "backbone": backbone, "cifar_stem": bool(cifar_stem),
              "neck_dim": out_features(model.neck) if model.neck is not None else None,
              "num_classes": model.fc.out_features}
    save_atomic({"model": model.state_dict(), "config": config, "data": dict(data),
                 "label_fraction": float(label_fraction), "indices": torch.as_tensor(indices)}, path)
    return path


def load_classifier(path: str | Path) -> tuple[Classifier, dict]:
    """(classifier, metadata) from a file written by save_classifier; one-line errors otherwise."""
    ckpt = load_checkpoint(path)
    config = ckpt["config"]
    if config.get("kind") != KIND:
        raise ContrastiveError(f"{path} is not a classifier (it looks like a pretraining checkpoint); pass the "
                               "classifier.pt written by `contrastive finetune --out DIR`")
    channels = ckpt["data"]["channels"]
    encoder, feat_dim = build_backbone(config["backbone"], channels, config["cifar_stem"])
    neck = simclr_head(feat_dim, config["neck_dim"], 2, num_layers=2)[:1] if config["neck_dim"] else None
    model = Classifier(encoder, feat_dim, config["num_classes"], neck=neck)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise ContrastiveError(f"classifier {path} does not match backbone {config['backbone']}: "
                               f"{str(e).splitlines()[0][:160]}") from None
    meta = {"backbone": config["backbone"], "cifar_stem": config["cifar_stem"], "data": ckpt["data"],
            "label_fraction": ckpt["label_fraction"], "indices": ckpt["indices"].tolist()}
    return model, meta
