"""`contrastive pipeline`: the few-label pipeline (contrastive.pipeline), its parser beside its handler.

It takes every pretraining flag, its defaults shown from the pipeline's own pretraining preset, and
every PipelineConfig field; --quick swaps the defaults for the QUICK preset, and a typed flag still wins.
"""

from __future__ import annotations

import argparse

from contrastive.cli.flags import add_command, add_pretrain_flags
from contrastive.commands import pretrain_config
from contrastive.fields import add_fields, build, given
from contrastive.modality import MODALITIES, modality_for
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
    note_data_defaults(p)
    p.set_defaults(func=run)


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    """The typed flags over the data's defaults (its modality's `pipeline_defaults`) over PipelineConfig's, or over
    the --quick preset: a typed flag always wins."""
    overrides = matched_baseline(given(args, PipelineConfig, exclude=("pretrain",)))
    overrides["pretrain"] = pretrain_config(args, exclude=("out", "resume"))
    data_defaults = modality_for(getattr(args, "data", None)).pipeline_defaults
    base = QUICK if args.quick else build(PipelineConfig, None, data_defaults)
    return build(PipelineConfig, base, overrides)


def note_data_defaults(parser: argparse.ArgumentParser) -> None:
    """Each flag whose default a kind of data changes says so in --help: "(default: 100; code data: 300)"."""
    notes: dict[str, list[str]] = {}
    for modality in MODALITIES.values():
        for name, value in modality.pipeline_defaults.items():
            for dest, shown in (value.items() if isinstance(value, dict) else [(None, value)]):
                notes.setdefault(name if dest is None else f"{name}_{dest}", []).append(f"{modality.name} data: "
                                                                                        f"{shown}")
    for action in parser._actions:
        if action.dest in notes and action.help and action.help.endswith(")"):
            action.help = action.help[:-1] + "; " + "; ".join(notes[action.dest]) + ")"


def run(args: argparse.Namespace) -> int:
    run_pipeline(pipeline_config(args))
    return 0
