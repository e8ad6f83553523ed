"""`contrastive export`, its parser beside its handler; writing and checking each format is contrastive.export."""

from __future__ import annotations

import argparse
from pathlib import Path

from contrastive import files
from contrastive.cli.flags import add_command
from contrastive.errors import ContrastiveError
from contrastive.export import SUFFIXES, input_contract, load_exportable, output_width, planned_files, spec_path

TOLERANCE = 1e-4  # the flag's default: largest absolute difference from PyTorch, on logits or embeddings


def add_parser(sub) -> None:
    p = add_command(sub, "export", "write an encoder, classifier or student as ONNX, TorchScript or safetensors "
                                   "that runs without this package")
    p.add_argument("--model", required=True,
                   help="a pretraining checkpoint (exports its encoder) or a classifier file (the pipeline's "
                        "RUN/classifiers/*.pt, finetune / distill --out)")
    p.add_argument("--format", choices=tuple(SUFFIXES), required=True,
                   help="onnx (dynamic batch axis; checked in onnxruntime), torchscript, or safetensors (weights) "
                        "plus a JSON of the config that rebuilds the module")
    p.add_argument("--out", default=None, help="output file; default: the model's path with "
                                               + " / ".join(SUFFIXES.values()))
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help="largest absolute difference allowed between the exported file and PyTorch on a test batch")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.tolerance >= 0:
        raise ContrastiveError(f"--tolerance must be 0 or more, got {args.tolerance:g}; pass e.g. 1e-4")
    path = Path(args.out) if args.out else Path(args.model).with_suffix(SUFFIXES[args.format])
    if path.resolve() == Path(args.model).resolve():
        raise ContrastiveError(f"--out {path} is the model file itself; choose another --out")
    ex = load_exportable(args.model)
    files.write_all_atomic(planned_files(ex, args.format, path, args.tolerance))
    also = f" (+ {spec_path(path).name})" if args.format == "safetensors" else ""
    print(f"exported {ex.kind} ({ex.record['backbone']}) as {args.format} to {path}{also}: "
          f"input {input_contract(ex)} -> {ex.output} (N, {output_width(ex)})")
    return 0
