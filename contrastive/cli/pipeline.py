"""`contrastive pipeline`: the few-label pipeline (contrastive.pipeline), its parser beside its handler.

It takes every pretraining flag, its defaults shown from the pipeline's own pretraining preset, and
every PipelineConfig field; --quick swaps the defaults for the QUICK preset, and a typed flag still wins.
"""

from __future__ import annotations

import argparse

from contrastive.cli.flags import add_command, add_pretrain_flags
from contrastive.commands import pretrain_config
from contrastive.fields import add_fields, build, given
from contrastive.pipeline import QUICK, PipelineConfig, matched_baseline, run_pipeline

DEFAULTS = PipelineConfig()


def fractions_text(fractions: tuple[float, ...]) -> str:
    """(0.01, 0.1) -> '1% and 10%'."""
    shown = [f"{f * 100:g}%" for f in fractions]
    return ", ".join(shown[:-1]) + " and " + shown[-1] if len(shown) > 1 else "".join(shown)


def add_parser(sub) -> None:
    p = add_command(sub, "pipeline", "the main job: pretrain -> kNN -> supervised / linear / finetune / semi / distill at "
                                     f"{fractions_text(DEFAULTS.fractions)} labels -> report")
    add_pretrain_flags(p, exclude=("out", "resume"), base=DEFAULTS.pretrain)
    add_fields(p.add_argument_group("the few-label stages"), PipelineConfig, exclude=("pretrain",))
    p.add_argument("--quick", action="store_true",
                   help="smoke version, about a minute on 2 CPU cores (2 epochs, 1,000 items); typed flags still win")
    p.set_defaults(func=run)


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    """The typed flags over the defaults, or over the --quick preset: a typed flag always wins."""
    overrides = matched_baseline(given(args, PipelineConfig, exclude=("pretrain",)))
    overrides["pretrain"] = pretrain_config(args, exclude=("out", "resume"))
    return build(PipelineConfig, QUICK if args.quick else PipelineConfig(), overrides)


def run(args: argparse.Namespace) -> int:
    run_pipeline(pipeline_config(args))
    return 0
