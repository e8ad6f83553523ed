"""The flags several subcommands share, how `--help` shows them, and reading them back.

Flags generated from dataclass fields (contrastive.fields) show their own default. A hand-written
flag takes its default from a named constant of the module that adds it, and `Help` prints that
default after its help, except where it says nothing true: a required flag, a switch, or None (the
help then says in words what None means).
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from contrastive.commands import method_option_classes
from contrastive.config import PretrainConfig
from contrastive.device import pick_device
from contrastive.fields import add_fields, add_shared_fields, given_shared
from contrastive.modality import MODALITIES, option_classes


class Help(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: X)" after a hand-written flag's help, left off where X is not a true default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default is None or action.nargs == 0:  # nargs 0: a switch
            return action.help
        return super()._get_help_string(action)


def add_command(sub, name: str, text: str) -> argparse.ArgumentParser:
    """A subcommand whose one-line summary is its entry in `contrastive --help` and the top of its own --help."""
    return sub.add_parser(name, help=text.replace("%", "%%"), description=text, formatter_class=Help)


def add_pretrain_flags(p: argparse.ArgumentParser, exclude=(), base: PretrainConfig | None = None) -> None:
    """Every PretrainConfig field (its defaults shown from `base`, a preset such as the pipeline's), then the
    options of every method and of every modality."""
    add_fields(p, PretrainConfig, exclude=exclude, base=base)
    add_shared_fields(p.add_argument_group("options of each method (contrastive/methods/<name>.py)"),
                      method_option_classes())
    add_shared_fields(p.add_argument_group("options of the data (its modality)"), option_classes())


def reading_option_names() -> set[str]:
    return {name for modality in MODALITIES.values() for name in modality.load_options}


def add_data_flags(p: argparse.ArgumentParser, keep=("data", "device", "seed")) -> None:
    """--data, --device, --seed from PretrainConfig, and the modalities' options that reading data takes."""
    add_fields(p, PretrainConfig, exclude=[f.name for f in dataclasses.fields(PretrainConfig) if f.name not in keep])
    reading = reading_option_names()
    add_shared_fields(p, option_classes(), exclude=[f.name for cls in option_classes().values()
                                                    for f in dataclasses.fields(cls) if f.name not in reading])


def reading_options(args: argparse.Namespace) -> dict:
    """The typed options that reading data takes (e.g. skip unreadable files); other flags of the same
    name on a command (a training budget's --augment) are not data options."""
    names = reading_option_names()
    return {k: v for k, v in given_shared(args, option_classes()).items() if k in names}


def seed_of(args: argparse.Namespace) -> int:
    return getattr(args, "seed", PretrainConfig.seed)


def device_of(args: argparse.Namespace) -> torch.device:
    return pick_device(getattr(args, "device", PretrainConfig.device))
