"""The typed flags as config overrides, shared by the subcommands that pretrain (contrastive.cli.pretrain,
contrastive.cli.pipeline) and by the benchmarks that drive the same parser.

The subcommands themselves, each parser beside its handler, are the modules of contrastive.cli.
"""

from __future__ import annotations

import argparse

from contrastive.config import PretrainConfig
from contrastive.fields import given, given_shared
from contrastive.methods import METHODS
from contrastive.modality import option_classes


def method_option_classes() -> dict[str, type]:
    return {name: module.Options for name, module in METHODS.items()}


def pretrain_config(args: argparse.Namespace, exclude=()) -> dict:
    """The typed pretraining flags as overrides of PretrainConfig, with the method's and the data's options."""
    overrides = given(args, PretrainConfig, exclude=exclude)
    method_options, data_options = given_shared(args, method_option_classes()), given_shared(args, option_classes())
    if method_options:
        overrides["method_options"] = method_options
    if data_options:
        overrides["data_options"] = data_options
    return overrides
