"""`contrastive pretrain`: an encoder pretrained without labels, every flag a field of PretrainConfig or of
the method's or the data's Options."""

from __future__ import annotations

import argparse

from contrastive import distributed
from contrastive.cli.flags import add_command, add_pretrain_flags
from contrastive.commands import pretrain_config
from contrastive.config import PretrainConfig
from contrastive.fields import build


def add_parser(sub) -> None:
    p = add_command(sub, "pretrain", "pretrain an encoder without labels")
    add_pretrain_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
