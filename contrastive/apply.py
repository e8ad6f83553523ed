"""Applying what was learned: `contrastive predict` and `contrastive similar`.

predict runs a saved classifier over a split and writes, per item, its id, the predicted class
and one probability per class of the data the classifier was TRAINED on (the file says which),
so new unlabelled data gets the same columns as the labelled data. Functions of source code are
named by three columns, file, function and first line, so a C/C++ tree read with code:DIR gives one
row per function with its probability of "vulnerable" (a model of --task vulnerable).

similar ranks the training items by cosine similarity to a query under a pretrained encoder.
The training set is encoded once into an index saved beside the checkpoint
(`<stem>.index.pt`, a file of kind "index": contrastive.files), keyed by a fingerprint of the
checkpoint file and the data, so later queries encode only the query and a changed checkpoint or
data rebuilds it. The search is
exact: one matrix-vector product and a top-k. 50,000 x 512 float32 is 102 MB, and a query
against such a random index took 6.5 ms (median of 50; 2 AMD EPYC cores, torch 2.14), so an
approximate index (FAISS, hnswlib) would only earn its place above millions of items.

Nothing here is specific to a modality: items are read, named and drawn by the reader's handler.
The two commands' flags and handlers are in contrastive.cli.apply.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from contrastive import files
from contrastive.errors import ContrastiveError
from contrastive.evaluate.features import extract_features

QUERY = re.compile(r"(\w+):(-?\d+)")  # SPLIT:INDEX, e.g. test:12


def split_of(data, split: str) -> tuple[str, object]:
    """(name, items) of a split; auto: test when the data has one, else train (a flat folder of new items)."""
    if split == "auto":
        split = "test" if data.test is not None else "train"
    items = data.test if split == "test" else data.train
    if items is None:
        raise ContrastiveError(f"{data.name} has no {split} split; pass --split train (or auto)")
    return split, items


# --- predict ---------------------------------------------------------------------------------

def predict_proba(model: torch.nn.Module, items, reader, device: torch.device, batch_size: int) -> torch.Tensor:
    """Softmax probabilities (N, num_classes) float32 on the cpu, in item order, the model in eval mode."""
    logits, _ = extract_features(model.to(device), items, reader, device, batch_size, progress="predict")
    return F.softmax(logits, dim=1)


def csv_rows(ids: list[str] | list[dict[str, str]], probs: torch.Tensor, classes: list[str]) -> list[list[str]]:
    """The pinned format: the item's columns, class, one column per training class; then one row per item.
    The item's columns are "id", or the fields of ids given as dicts (code: file, function, line)."""
    predicted = probs.argmax(dim=1).tolist()
    fields = list(ids[0]) if ids and isinstance(ids[0], dict) else None
    rows = [[*(fields or ["id"]), "class", *classes]]
    rows += [[*(i.values() if fields else [i]), classes[c], *(f"{p:.6f}" for p in row)]
             for i, c, row in zip(ids, predicted, probs.tolist())]
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
    saved = saved_index(path)
    if saved is not None and saved[1] == key:
        return saved[0]
    print(f"encoding the {len(data.train)} training items of {data.name} once; index -> {path}", file=sys.stderr)
    index = embed(pre.encoder.to(device), data.train, pre.reader, device)
    try:
        files.save(path, files.INDEX, {"embeddings": index, "fingerprint": key})
    except ContrastiveError as e:  # a read-only run folder: answer anyway, encode again next time
        print(f"warning: index not saved: {e}", file=sys.stderr)
    return index


def saved_index(path: Path) -> tuple[torch.Tensor, dict] | None:
    """(embeddings, fingerprint) of the index at `path`; None when there is none or it is damaged or foreign."""
    if not path.is_file():
        return None
    try:
        saved = files.load(path, files.INDEX)
    except ContrastiveError:  # rebuilt and written over
        return None
    if "embeddings" in saved:
        return saved["embeddings"], saved["fingerprint"]
    return saved["model"], saved["config"]  # written before the kind tag, posing as a checkpoint


def nearest(index: torch.Tensor, query: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosine similarities, item indices) of the k rows of `index` (N, D) closest to `query` (D,); exact."""
    scores = index @ query  # (N,)
    return torch.topk(scores, min(k, len(index)))


def one_item_set(reader, raw):
    """A dataset holding one raw item, made by the item's modality."""
    return reader.handler.item_set(raw)


def file_query(query: str, reader) -> tuple[object, object, int] | None:
    """(one-item dataset, raw item, -1) of a query file (or FILE:NAME, a part of one the modality names: code's
    FILE:FUNCTION); None for SPLIT:INDEX or a query that names no file. It needs no data, so a command can read
    it first and refuse a bad name before reading a whole tree."""
    if QUERY.fullmatch(query.strip()) or not names_a_file(query):
        return None
    raw = reader.handler.read_item(query, reader.inputs)  # one-line error for a file or name it cannot read
    return one_item_set(reader, raw), raw, -1


def query_of(query: str, data, reader) -> tuple[object, object, int]:
    """(one-item dataset, raw item, label or -1) of SPLIT:INDEX of the data, or of a file (file_query)."""
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
    found = file_query(query, reader)
    if found is not None:
        return found
    raise ContrastiveError(f"query {query!r} is neither SPLIT:INDEX of {data.name} (e.g. test:12) nor a readable "
                           f"file (or FILE:FUNCTION of a source file); pass one of those")


def id_text(item_id: str | dict[str, str]) -> str:
    """An item's id on one line: itself, or its fields joined by ':' (code: FILE:FUNCTION:LINE)."""
    return ":".join(item_id.values()) if isinstance(item_id, dict) else item_id


def names_a_file(query: str) -> bool:
    """Whether the query is a file, or FILE:NAME of a part of one (a function of a source file)."""
    return os.path.isfile(query) or any(os.path.isfile(query[:i]) for i, c in enumerate(query) if c == ":")


def label_name(label: int, classes: list[str]) -> str:
    return classes[label] if 0 <= label < len(classes) else "-"
