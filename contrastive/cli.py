"""Command line: `contrastive SUBCOMMAND ...` (also `python -m contrastive`).

Every flag is generated from a field of a config dataclass (contrastive.fields): its name,
type, default and help are written once, beside the field. The method's own options come
from its file (contrastive/methods/<name>.py, `Options`), the data's from its modality
(contrastive/image, `Options`). Only the flags the user typed are applied, over the
defaults or over a preset such as `pipeline --quick`, so a typed flag always wins.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from contrastive.errors import ContrastiveError

FORMAT = argparse.ArgumentDefaultsHelpFormatter


def add_pretrain_flags(p: argparse.ArgumentParser, exclude=()) -> None:
    from contrastive.commands import method_option_classes
    from contrastive.config import PretrainConfig
    from contrastive.fields import add_fields, add_shared_fields
    from contrastive.modality import option_classes

    add_fields(p, PretrainConfig, exclude=exclude)
    add_shared_fields(p.add_argument_group("options of each method (contrastive/methods/<name>.py)"),
                      method_option_classes())
    add_shared_fields(p.add_argument_group("options of the data (its modality)"), option_classes())


def add_data_flags(p: argparse.ArgumentParser, keep=("data", "device", "seed")) -> None:
    """--data, --device, --seed from PretrainConfig, and the modalities' options that reading data takes."""
    from contrastive.config import PretrainConfig
    from contrastive.fields import add_fields, add_shared_fields
    from contrastive.modality import MODALITIES, option_classes

    add_fields(p, PretrainConfig, exclude=[f.name for f in dataclasses.fields(PretrainConfig) if f.name not in keep])
    reading = {name for m in MODALITIES.values() for name in m.load_options}
    add_shared_fields(p, option_classes(), exclude=[f.name for cls in option_classes().values()
                                                    for f in dataclasses.fields(cls) if f.name not in reading])


def add_fraction_arg(p: argparse.ArgumentParser, default: float | None) -> None:
    p.add_argument("--label-fraction", type=float, default=default, required=default is None,
                   help="fraction of the training labels to use, in (0, 1]; drawn class-balanced with --seed "
                        "(SimCLRv2 reports 0.01 and 0.1)")


def add_budget_flags(p: argparse.ArgumentParser, preset) -> None:
    from contrastive.evaluate.fit import Budget
    from contrastive.fields import add_fields

    add_fields(p, Budget, base=preset)


def cmd_predict(args: argparse.Namespace) -> int:
    from contrastive.apply import cmd_predict as predict

    return predict(args)


def cmd_similar(args: argparse.Namespace) -> int:
    from contrastive.apply import cmd_similar as similar

    return similar(args)


def cmd_export(args: argparse.Namespace) -> int:
    from contrastive.export import cmd_export as export

    return export(args)


def build_parser() -> argparse.ArgumentParser:
    from contrastive import commands
    from contrastive.config import KnnConfig
    from contrastive.evaluate.fit import DISTILL, FINETUNE, SUPERVISED
    from contrastive.fields import add_fields
    from contrastive.pipeline import PipelineConfig

    parser = argparse.ArgumentParser(prog="contrastive", description="Self-supervised contrastive pretraining and "
                                                                     "the SimCLRv2 few-label pipeline.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="pretrain an encoder without labels", formatter_class=FORMAT)
    add_pretrain_flags(p)
    p.set_defaults(func=commands.cmd_pretrain)

    p = sub.add_parser("knn", help="weighted kNN top-1 (cosine) of a frozen pretrained encoder", formatter_class=FORMAT)
    p.add_argument("--checkpoint", required=True, help="a pretraining checkpoint (RUN/checkpoint-epochNNNN.pt)")
    add_fields(p, KnnConfig, exclude=("every",))
    add_data_flags(p, keep=("data", "device"))
    p.set_defaults(func=commands.cmd_knn)

    p = sub.add_parser("linear", help="linear probe on frozen features (features computed once)", formatter_class=FORMAT)
    p.add_argument("--checkpoint", required=True, help="a pretraining checkpoint")
    add_fraction_arg(p, 1.0)
    add_data_flags(p)
    p.set_defaults(func=commands.cmd_linear)

    p = sub.add_parser("finetune", help="fine-tune the whole pretrained encoder on a labelled subset", formatter_class=FORMAT)
    p.add_argument("--checkpoint", required=True, help="a pretraining checkpoint")
    add_fraction_arg(p, None)
    p.add_argument("--no-head-layer", dest="from_head_layer", action="store_false",
                   help="start from the encoder alone instead of the head layer the checkpoint names (SimCLRv2 "
                        "sec. 2.3 fine-tunes from the first layer of SimCLR's head)")
    p.add_argument("--out", default=None, help="folder for the fine-tuned classifier and the subset's indices")
    add_budget_flags(p, FINETUNE)
    add_data_flags(p)
    p.set_defaults(func=commands.cmd_finetune)

    p = sub.add_parser("supervised", help="baseline: the same architecture from random init on the same labelled subset",
                       formatter_class=FORMAT)
    add_fraction_arg(p, None)
    p.add_argument("--backbone", default=None, help="default: what pretraining picks for this data")
    p.add_argument("--out", default=None, help="folder for the trained classifier")
    add_budget_flags(p, SUPERVISED)
    add_data_flags(p)
    p.set_defaults(func=commands.cmd_supervised)

    p = sub.add_parser("distill", help="SimCLRv2 distillation of a fine-tuned teacher into a student on unlabeled data",
                       formatter_class=FORMAT)
    p.add_argument("--teacher", required=True, help="a classifier written by `contrastive finetune --out`")
    p.add_argument("--student", default=None, help="student backbone (default: the teacher's: self-distillation)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="softmax temperature of SimCLRv2's eq. 2 (the pipeline chooses it on validation)")
    p.add_argument("--alpha", type=float, default=0.0,
                   help="weight of cross-entropy on the teacher's labelled subset (0: labels unused, SimCLRv2 default)")
    p.add_argument("--out", default=None, help="folder for the student classifier")
    add_budget_flags(p, DISTILL)
    add_data_flags(p)
    p.set_defaults(func=commands.cmd_distill)

    p = sub.add_parser("embed", help="write the encoder's embeddings of a dataset to .npy", formatter_class=FORMAT)
    p.add_argument("--checkpoint", required=True, help="a pretraining checkpoint")
    p.add_argument("--out", required=True, help="output file FILE.npy; labels go to FILE.labels.npy, file names to FILE.paths.txt")
    p.add_argument("--split", choices=("train", "test"), default="test", help="which split to embed")
    add_data_flags(p, keep=("data", "device"))
    p.set_defaults(func=commands.cmd_embed)

    p = sub.add_parser("predict", help="apply a classifier saved by the pipeline (or finetune / distill) to data: "
                                       "class and class probabilities of every item, as CSV", formatter_class=FORMAT)
    p.add_argument("--model", required=True, help="a classifier file: RUN/classifiers/*.pt of the pipeline, or "
                                                  "classifier.pt of finetune / distill --out")
    p.add_argument("--split", choices=("auto", "train", "test"), default="auto",
                   help="which split of --data to predict; auto: test when the data has one, else train (a flat "
                        "folder of new items)")
    p.add_argument("--out", default=None, help="CSV file (columns id, class, then one probability per class); "
                                               "default: standard output")
    p.add_argument("--batch-size", type=int, default=256, help="items per forward pass")
    add_data_flags(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("similar", help="the training items nearest to a query by the encoder's embedding (cosine)",
                       formatter_class=FORMAT)
    p.add_argument("--checkpoint", required=True, help="a pretraining checkpoint (its encoder embeds the items)")
    p.add_argument("--query", required=True, help="the query: a file the data's modality reads (an image file), "
                                                  "or SPLIT:INDEX of --data (e.g. test:12)")
    p.add_argument("-k", type=int, default=10, help="neighbours to list")
    p.add_argument("--sheet", default="similar.png",
                   help="PNG of the query and its neighbours, where the modality can draw its items ('' for none)")
    add_data_flags(p)
    p.set_defaults(func=cmd_similar)

    p = sub.add_parser("export", help="write an encoder, classifier or student as ONNX, TorchScript or safetensors "
                                      "that runs without this package", formatter_class=FORMAT)
    p.add_argument("--model", required=True, help="a pretraining checkpoint (exports its encoder) or a classifier "
                                                  "file (the pipeline's RUN/classifiers/*.pt, finetune / distill --out)")
    p.add_argument("--format", choices=("onnx", "torchscript", "safetensors"), required=True,
                   help="onnx (dynamic batch axis; checked in onnxruntime), torchscript, or safetensors (weights) "
                        "plus a JSON of the config that rebuilds the module")
    p.add_argument("--out", default=None, help="output file; default: the model's path with .onnx / .ts.pt / "
                                               ".safetensors")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest absolute difference allowed between the exported file and PyTorch on a test batch")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("pipeline", help="the main job: pretrain -> kNN -> supervised / linear / finetune / distill "
                                        "at 1%%, 10%%, 100%% labels -> report", formatter_class=FORMAT)
    add_pretrain_flags(p, exclude=("out", "resume"))
    add_fields(p.add_argument_group("the few-label stages"), PipelineConfig, exclude=("pretrain",))
    p.add_argument("--quick", action="store_true",
                   help="smoke version, about a minute on 2 CPU cores (2 epochs, 1,000 items); typed flags still win")
    p.set_defaults(func=commands.cmd_pipeline)
    return parser


def user_message(err: BaseException) -> str:
    """One line: errors re-raised from data-loader workers carry a traceback; keep its last line."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    text = lines[-1] if lines else type(err).__name__
    prefix = f"{ContrastiveError.__module__}.{ContrastiveError.__name__}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def main(argv: list[str] | None = None) -> int:
    from contrastive import distributed

    args = build_parser().parse_args(argv)
    grouped = False
    try:
        grouped = distributed.init_from_env() is not None  # under torchrun: join the process group
        code = args.func(args)
    except ContrastiveError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint in the run folder is intact (continue with --resume)", file=sys.stderr)
        code = 130
    finally:
        distributed.cleanup()
    if grouped:
        # A torchrun worker ends here, without the interpreter's finalization: there, gloo's
        # teardown sometimes aborted a rank (SIGABRT, "terminate called without an active
        # exception") after the group was destroyed and the run was saved, and torchrun
        # counted the finished run as failed (tests/test_torchrun.py restart test, 2 of 3).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
