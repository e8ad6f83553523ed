"""The classifier every few-label stage trains: encoder -> optional neck -> linear layer; saving and loading it.

A classifier carries the record of what it is built from (modality, backbone, inputs,
widths, neck shape), so a saved one is rebuilt from its file alone. Its file is of kind "classifier"
in the project's one format (contrastive.files): written atomically, read with weights_only=True.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from contrastive import files
from contrastive.errors import ContrastiveError
from contrastive.evaluate.pretrained import Pretrained, build_neck
from contrastive.modality import Reader

KIND = files.CLASSIFIER


class Classifier(nn.Module):
    """encoder -> optional neck (e.g. SimCLRv2's first head layer) -> linear layer."""

    def __init__(self, encoder: nn.Module, feat_dim: int, num_classes: int, neck: nn.Module | None = None,
                 neck_dim: int | None = None, record: dict | None = None):
        super().__init__()
        self.encoder = encoder
        self.neck = neck
        in_dim = feat_dim if neck is None else (neck_dim or out_features(neck))
        self.fc = nn.Linear(in_dim, num_classes)
        # Small random weights and zero bias: every class starts equally likely (MoCo's
        # main_lincls.py initialises its linear layer the same way).
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)
        self.record = record  # what rebuilds it (see module docstring); None for a user-supplied encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)  # (N, feat_dim)
        if self.neck is not None:
            h = self.neck(h)  # (N, neck_dim)
        return self.fc(h)  # (N, num_classes) logits


def out_features(module: nn.Module) -> int:
    """The width of a head's output: its last Linear layer's."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("cannot tell the output width of a neck without a Linear layer; pass neck_dim")
    return linears[-1].out_features


def classifier_from(pre: Pretrained, num_classes: int, from_head_layer: bool = True, seed: int = 0) -> Classifier:
    """A Classifier on deep copies of the pretrained encoder (and neck): `pre` stays untouched.

    from_head_layer: SimCLRv2 (sec. 3) fine-tunes from the first head layer with 1% / 10% of
    the labels and from the encoder's output (the head's input) with all of them. The seed
    fixes the new linear layer's initial weights.
    """
    use_neck = from_head_layer and pre.head is not None
    record = dict(pre.record, neck=pre.record["neck"] if use_neck else None)
    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream where it was
        torch.manual_seed(seed)
        return Classifier(copy.deepcopy(pre.encoder), pre.feat_dim, num_classes,
                          copy.deepcopy(pre.head) if use_neck else None, record=record)


def random_classifier(reader: Reader, backbone: str, num_classes: int, seed: int = 0) -> Classifier:
    """A randomly initialised backbone + linear layer reading what `reader` reads; the seed fixes the weights."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream where it was
        torch.manual_seed(seed)
        encoder, feat_dim = reader.build_encoder(backbone)
        record = {"modality": reader.modality, "backbone": backbone, "inputs": dict(reader.inputs),
                  "feat_dim": feat_dim, "neck": None}
        return Classifier(encoder, feat_dim, num_classes, record=record)


def reader_of(model: Classifier) -> Reader:
    return Reader(model.record["modality"], model.record["inputs"])


def save_classifier(model: Classifier, path: str | Path, *, data: dict, label_fraction: float,
                    indices: torch.Tensor) -> Path:
    """The classifier, what rebuilds it, the data it was trained on and the labelled subset it saw."""
    if model.record is None:
        raise ValueError("this classifier was built on a user-supplied encoder and has no record to rebuild it from")
    path = Path(path)
    files.save(path, KIND, {"model": model.state_dict(), "encoder": dict(model.record),
                            "num_classes": model.fc.out_features, "data": dict(data),
                            "label_fraction": float(label_fraction), "indices": torch.as_tensor(indices)})
    return path


def load_classifier(path: str | Path, ckpt: dict | None = None) -> tuple[Classifier, dict]:
    """(classifier, metadata) from a file written by save_classifier; one-line errors otherwise.
    `ckpt`: the file's contents when the caller has read them already."""
    ckpt = files.load(path, KIND) if ckpt is None else ckpt
    if ckpt.get("kind") == KIND and "encoder" not in ckpt:  # {"model", "config": {"kind": ...}}, before the record
        raise ContrastiveError(f"{path} is a classifier written by an older version of contrastive; fine-tune "
                               "again (contrastive finetune --out DIR) to get one this version reads")
    if ckpt.get("kind") != KIND:
        raise ContrastiveError(f"{path} is not a classifier (it looks like a pretraining checkpoint); pass the "
                               "classifier.pt written by `contrastive finetune --out DIR`")
    record = ckpt["encoder"]
    reader = Reader(record["modality"], record["inputs"])
    encoder, feat_dim = reader.build_encoder(record["backbone"])
    neck = build_neck(record["neck"]) if record.get("neck") else None
    model = Classifier(encoder, feat_dim, ckpt["num_classes"], neck=neck, record=record)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise ContrastiveError(f"classifier {path} does not match backbone {record['backbone']}: "
                               f"{str(e).splitlines()[0][:160]}") from None
    meta = {"backbone": record["backbone"], "data": ckpt["data"], "label_fraction": ckpt["label_fraction"],
            "indices": ckpt["indices"].tolist()}
    return model, meta
