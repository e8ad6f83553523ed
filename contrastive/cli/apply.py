"""`contrastive predict` and `contrastive similar`, each parser beside its handler; what they do with a
model (the CSV, the embedding index, the contact sheet) is contrastive.apply."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from contrastive import files
from contrastive.apply import (accuracy_note, csv_rows, embed, file_query, id_text, label_name, nearest,
                               predict_proba, query_of, split_of, train_index, write_csv, write_csv_file)
from contrastive.cli.flags import add_command, add_data_flags, device_of, reading_options
from contrastive.errors import ContrastiveError
from contrastive.evaluate.classifier import load_classifier, reader_of
from contrastive.evaluate.pretrained import load_pretrained
from contrastive.modality import load_data

# The defaults of the flags written here.
PREDICT_SPLIT = "auto"
PREDICT_BATCH = 256  # items per forward pass
NEIGHBOURS = 10
SHEET = "similar.png"


def add_parsers(sub) -> None:
    add_predict(sub)
    add_similar(sub)


def data_of(args: argparse.Namespace, reader):
    """The --data the user typed (the embedded default when omitted), with the reading options typed, read
    the way the model reads its items (e.g. a folder of new images converted to the model's channels)."""
    return load_data(getattr(args, "data", None), reading_options(args), inputs=reader.inputs)


def positive(value: int, flag: str) -> int:
    if value < 1:
        raise ContrastiveError(f"{flag} must be at least 1, got {value}; pass a positive number")
    return value


# --- predict ---------------------------------------------------------------------------------

def add_predict(sub) -> None:
    p = add_command(sub, "predict", "apply a classifier saved by the pipeline (or finetune / distill) to data: "
                                    "class and class probabilities of every item, as CSV")
    p.add_argument("--model", required=True, help="a classifier file: RUN/classifiers/*.pt of the pipeline, or "
                                                  "classifier.pt of finetune / distill --out")
    p.add_argument("--split", choices=("auto", "train", "test"), default=PREDICT_SPLIT,
                   help="which split of --data to predict; auto: test when the data has one, else train (a flat "
                        "folder of new items)")
    p.add_argument("--out", default=None, help="CSV file (columns id, class, then one probability per class; "
                                               "code: file, function, line instead of id); default: standard "
                                               "output")
    p.add_argument("--batch-size", type=int, default=PREDICT_BATCH, help="items per forward pass")
    add_data_flags(p)
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
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
        files.write_atomic_with(out, lambda tmp: write_csv_file(rows, tmp), "--out")
        where = str(out)
    else:
        write_csv(rows, sys.stdout)
        where = "standard output"
    print(f"predicted {len(items)} items of {data.name} {split} -> {where}{accuracy_note(probs, items, data, classes)}",
          file=sys.stderr)
    return 0


# --- similar ---------------------------------------------------------------------------------

def add_similar(sub) -> None:
    p = add_command(sub, "similar", "the training items nearest to a query by the encoder's embedding (cosine)")
    p.add_argument("--checkpoint", required=True, help="a pretraining checkpoint (its encoder embeds the items)")
    p.add_argument("--query", required=True, help="the query: a file the data's modality reads (an image file; "
                                                  "a C/C++ file, its first function), FILE:FUNCTION (that function "
                                                  "of a C/C++ file), or SPLIT:INDEX of --data (e.g. test:12)")
    p.add_argument("-k", type=int, default=NEIGHBOURS, help="neighbours to list")
    p.add_argument("--sheet", default=SHEET,
                   help="PNG of the query and its neighbours, where the modality can draw its items ('' for none)")
    add_data_flags(p)
    p.set_defaults(func=run_similar)


def run_similar(args: argparse.Namespace) -> int:
    k = positive(args.k, "-k")
    pre = load_pretrained(args.checkpoint)
    found = file_query(args.query, pre.reader)  # a bad file or name is refused before the data is read
    data = data_of(args, pre.reader)
    pre.reader.check(data, f"checkpoint {args.checkpoint}")
    one, raw, label = found or query_of(args.query, data, pre.reader)
    device = device_of(args)
    index = train_index(pre, data, device)
    sims, idx = nearest(index, embed(pre.encoder.to(device), one, pre.reader, device)[0], k)
    ids, labels = pre.reader.handler.item_ids(data.train, "train"), data.train.labels
    names = [label_name(int(labels[i]) if labels is not None else -1, data.classes) for i in idx.tolist()]
    print(f"query {args.query} (label {label_name(label, data.classes)}): {len(idx)} nearest of "
          f"{len(index)} training items", file=sys.stderr)
    for rank, (sim, i, name) in enumerate(zip(sims.tolist(), idx.tolist(), names), start=1):
        print(f"{rank}\t{sim:.4f}\t{name}\t{id_text(ids[i])}")
    draw = pre.reader.handler.contact_sheet if pre.reader.handler.draws else None
    if args.sheet and draw is None:
        print(f"note: {pre.reader.modality} items cannot be drawn; no sheet written", file=sys.stderr)
    elif args.sheet:
        sheet = Path(args.sheet)
        raws = [raw] + [data.train[i][0] for i in idx.tolist()]
        captions = ["query"] + [f"{s:.2f} {n}" for s, n in zip(sims.tolist(), names)]
        files.write_atomic_with(sheet, lambda tmp: draw(raws, captions, tmp), "--sheet")
        print(f"sheet: {sheet}", file=sys.stderr)  # stdout stays the tab-separated neighbours
    return 0
