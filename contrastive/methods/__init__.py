"""The methods: plain nn.Modules with one contract, and the registry that names them.

    loss, metrics = method(views)     # views: a list of batches, one per view
    method.update_target(progress)    # EMA step after the optimizer step, progress = step / total (a no-op
                                      #   for methods without a target network)
    method.encoder                    # the backbone that evaluation uses
    method.classifier_neck()          # what fine-tuning starts from beyond the encoder, or None

A method file holds everything about its method: the module, whose class takes its
`Options` whole (`SimCLR(encoder, feat_dim, options)`); the `Options` dataclass (a
`MethodOptions`, contrastive.methods.base), whose fields carry the defaults and where each
comes from (the command line is generated from them) and whose hooks have defaults: `VIEWS`
and `views()` (the views it needs, a ViewSpec the data modality honours or refuses),
`finish(world_size=, local_batch=)` (defaults that depend on the run) and
`distributed_note()`; `BASE_LR` per optimizer; `SHAPE` (the options a resumed run must
share); and `build(options, encoder, feat_dim)`. Adding a method is one file and one line
in METHODS; `check_method` refuses, at import, a file that lacks a part.

Methods know nothing of optimizers, devices, logging or the kind of data. What
multi-process training changes inside a method goes through contrastive.distributed.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType

from torch import nn

from contrastive.batches import ViewSpec
from contrastive.errors import ContrastiveError
from contrastive.fields import check_positive
from contrastive.methods import barlow_twins, byol, cpc, dino, infomax, moco, mocov3, simclr, simsiam, swav, vicreg
from contrastive.methods.barlow_twins import BarlowTwins
from contrastive.methods.base import MethodOptions
from contrastive.methods.byol import BYOL
from contrastive.methods.moco import MoCo
from contrastive.methods.mocov3 import MoCoV3
from contrastive.methods.simclr import SimCLR
from contrastive.methods.simsiam import SimSiam
from contrastive.methods.vicreg import VICReg

METHODS: dict[str, ModuleType] = {
    "simclr": simclr,  # Chen et al. 2020
    "moco": moco,  # MoCo v2: He et al. 2020, Chen et al. 2020
    "byol": byol,  # Grill et al. 2020
    "simsiam": simsiam,  # Chen & He 2021
    "barlow_twins": barlow_twins,  # Zbontar et al. 2021
    "vicreg": vicreg,  # Bardes, Ponce & LeCun 2022
    "mocov3": mocov3,  # Chen, Xie & He 2021
    "dino": dino,  # Caron et al. 2021
    "swav": swav,  # Caron et al. 2020
    "infomax": infomax,  # Deep InfoMax: Hjelm et al. 2019
    "cpc": cpc,  # CPC v2: Hénaff et al. 2020 (van den Oord et al. 2018)
}

DEFAULT_METHOD = "simclr"  # the method of the SimCLRv2 few-label recipe (Chen et al. 2020)
OPTIMIZERS = ("sgd", "lars", "adamw")  # every method gives a BASE_LR for each


def check_method(name: str, module: ModuleType) -> ModuleType:
    """The module, if it has every part of a method file (see above); else a TypeError naming the part."""
    options = vars(module).get("Options")
    if not (isinstance(options, type) and issubclass(options, MethodOptions) and dataclasses.is_dataclass(options)):
        raise TypeError(f"method {name}: Options must be a dataclass subclassing MethodOptions")
    if not isinstance(options.VIEWS, ViewSpec):
        raise TypeError(f"method {name}: Options.VIEWS must be a ViewSpec")
    lrs = vars(module).get("BASE_LR", {})
    if set(lrs) != set(OPTIMIZERS):
        raise TypeError(f"method {name}: BASE_LR must give a rate for each of {', '.join(OPTIMIZERS)}")
    fields = {f.name for f in dataclasses.fields(options)}
    if not set(vars(module).get("SHAPE", ("-",))) <= fields:
        raise TypeError(f"method {name}: SHAPE must name options of its Options")
    if not callable(vars(module).get("build")):
        raise TypeError(f"method {name}: build(options, encoder, feat_dim) is missing")
    return module


for _name, _module in METHODS.items():
    check_method(_name, _module)


def method_names() -> tuple[str, ...]:
    return tuple(METHODS)


def method_module(name: str) -> ModuleType:
    if name not in METHODS:
        raise ContrastiveError(f"unknown method '{name}'; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


def options_for(name: str, given: dict | MethodOptions) -> MethodOptions:
    """Method `name`'s Options: `given` itself, or the typed options in `given` over the defaults.

    A key that is not an option of this method is an error naming the method's options.
    """
    module = method_module(name)
    if isinstance(given, module.Options):
        return given
    if isinstance(given, MethodOptions):
        raise ContrastiveError(f"options of another method given to {name} ({type(given).__module__})")
    known = {f.name for f in dataclasses.fields(module.Options)}
    unknown = sorted(set(given) - known)
    if unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        options = ", ".join("--" + k.replace("_", "-") for k in sorted(known))
        raise ContrastiveError(f"{flags} is not an option of {name}; its options are: {options}")
    return module.Options(**given)


def resolve_options(name: str, given: dict | MethodOptions, *, world_size: int = 1,
                    local_batch: int = 1) -> MethodOptions:
    """The method's options with `given` over its defaults, finished for the run and checked."""
    options = options_for(name, given).finish(world_size=world_size, local_batch=local_batch)
    check_positive(options)
    return options


def view_spec(name: str, options: MethodOptions) -> ViewSpec:
    """The views method `name` needs with these options, carrying the method's name for messages."""
    return dataclasses.replace(options_for(name, options).views(), method=name)


def build_method(name: str, options: MethodOptions, encoder: nn.Module, feat_dim: int) -> nn.Module:
    """The method module `name` around `encoder`, from resolved options (see resolve_options)."""
    return method_module(name).build(options_for(name, options), encoder, feat_dim)


__all__ = ["SimCLR", "MoCo", "BYOL", "SimSiam", "BarlowTwins", "VICReg", "MoCoV3", "METHODS", "DEFAULT_METHOD",
           "MethodOptions", "OPTIMIZERS", "build_method", "check_method", "method_module", "method_names",
           "options_for", "resolve_options", "view_spec"]
