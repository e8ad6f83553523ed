"""The methods: plain nn.Modules with one contract, and the registry that names them.

    loss, metrics = method(views)     # views: a list of batches, one per view
    method.update_target(progress)    # EMA step after the optimizer step, progress = step / total (a no-op
                                      #   for methods without a target network)
    method.encoder                    # the backbone that evaluation uses
    method.classifier_neck()          # what fine-tuning starts from beyond the encoder, or None

A method file holds everything about its method: the module, an `Options` dataclass
whose fields carry the defaults and where each comes from (the command line is generated
from them), `BASE_LR` per optimizer, `SHAPE` (the options a resumed run must share),
`VIEWS` (the name of the view recipe the data modality applies; a method whose options
choose it defines `views(options)` instead, see view_recipe), `build(options,
encoder, feat_dim)` and optionally `finish(options, world_size=, local_batch=)` for
defaults that depend on the run. Adding a method is one file and one line in METHODS.

Methods know nothing of optimizers, devices, logging or the kind of data. What
multi-process training changes inside a method goes through contrastive.distributed.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType

from torch import nn

from contrastive.errors import ContrastiveError
from contrastive.methods import barlow_twins, byol, cpc, dino, infomax, moco, mocov3, simclr, simsiam, swav, vicreg
from contrastive.methods.barlow_twins import BarlowTwins
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


def method_names() -> tuple[str, ...]:
    return tuple(METHODS)


def method_module(name: str) -> ModuleType:
    if name not in METHODS:
        raise ContrastiveError(f"unknown method '{name}'; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


def resolve_options(name: str, given: dict, *, world_size: int = 1, local_batch: int = 1) -> dict:
    """The method's options with `given` over its defaults, finished for the run; a plain dict.

    A key that is not an option of this method is an error naming the method's options.
    """
    module = method_module(name)
    known = {f.name for f in dataclasses.fields(module.Options)}
    unknown = sorted(set(given) - known)
    if unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        options = ", ".join("--" + k.replace("_", "-") for k in sorted(known))
        raise ContrastiveError(f"{flags} is not an option of {name}; its options are: {options}")
    options = module.Options(**given)
    if hasattr(module, "finish"):
        options = module.finish(options, world_size=world_size, local_batch=local_batch)
    return dataclasses.asdict(options)


def view_recipe(name: str, options: dict) -> str:
    """The name of the view recipe for method `name` with resolved `options`: `views(options)` where the
    method defines it (an option picks the views), else its VIEWS."""
    module = method_module(name)
    if hasattr(module, "views"):
        return module.views(module.Options(**options))
    return module.VIEWS


def build_method(name: str, options: dict, encoder: nn.Module, feat_dim: int) -> nn.Module:
    """The method module `name` around `encoder`, from resolved options (see resolve_options)."""
    module = method_module(name)
    return module.build(module.Options(**options), encoder, feat_dim)


__all__ = ["SimCLR", "MoCo", "BYOL", "SimSiam", "BarlowTwins", "VICReg", "MoCoV3", "METHODS", "DEFAULT_METHOD",
           "build_method", "method_module", "method_names", "resolve_options", "view_recipe"]
