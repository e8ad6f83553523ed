"""Command line: `contrastive SUBCOMMAND ...` (also `python -m contrastive`).

Each subcommand's parser and handler sit side by side in one module of this package:

    pretrain.py   pretrain
    evaluate.py   knn, linear, finetune, supervised, distill, embed
    apply.py      predict, similar
    export.py     export
    pipeline.py   pipeline
    flags.py      the flags several subcommands share, and how --help shows a default

Every flag is generated from a field of a config dataclass (contrastive.fields): its name,
type, default and help are written once, beside the field. The method's own options come
from its file (contrastive/methods/<name>.py, `Options`), the data's from its modality
(contrastive/image, `Options`). Only the flags the user typed are applied, over the
defaults or over a preset such as `pipeline --quick`, so a typed flag always wins. The few
hand-written flags take their defaults from named constants beside their parsers.
"""

from __future__ import annotations

import argparse
import os
import sys

from contrastive.cli import apply, evaluate, export, pipeline, pretrain
from contrastive.errors import ContrastiveError

# In the order `contrastive --help` lists them; each adds its subcommands' parsers, handlers attached.
ADD_PARSERS = (pretrain.add_parser, evaluate.add_parsers, apply.add_parsers, export.add_parser, pipeline.add_parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="contrastive", description="Self-supervised contrastive pretraining and "
                                                                     "the SimCLRv2 few-label pipeline.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in ADD_PARSERS:
        add(sub)
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
