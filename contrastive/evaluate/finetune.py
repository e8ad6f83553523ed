"""Fine-tuning a pretrained encoder on a few labels, and the baseline a sceptic runs beside it:
the same network from random init on the same labels with the same budget (SimCLRv2 sec. 3)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from contrastive.evaluate.classifier import Classifier, classifier_from, random_classifier
from contrastive.evaluate.features import output_width
from contrastive.evaluate.fit import FINETUNE, SUPERVISED, Budget, fit_classifier
from contrastive.evaluate.pretrained import Pretrained


def finetune(pretrained: Pretrained | nn.Module, labeled, test, num_classes: int, reader=None, *,
             feat_dim: int | None = None, from_head_layer: bool = True, budget: Budget = FINETUNE,
             device: torch.device | str = "cpu", seed: int = 0, log=None) -> tuple[Classifier, float | None]:
    """Fine-tune every layer of a copy of the pretrained network on the labelled items.

    `pretrained` is a Pretrained (its neck, e.g. SimCLRv2's first head layer, is kept when
    from_head_layer) or a bare encoder with the `reader` that feeds it (feat_dim found by a
    forward pass unless given). Nothing passed in is changed.
    """
    if isinstance(pretrained, Pretrained):  # callers check the data against it (check_compatible)
        reader = pretrained.reader
        model = classifier_from(pretrained, num_classes, from_head_layer, seed=seed)
    else:
        encoder = copy.deepcopy(pretrained).cpu()
        feat_dim = feat_dim or output_width(encoder, labeled, reader)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Classifier(encoder, feat_dim, num_classes)
    accuracy = fit_classifier(model, labeled, test, reader, device=device, seed=seed, log=log, **budget.kwargs())
    return model, accuracy


def supervised_baseline(reader, backbone: str, num_classes: int, labeled, test, *, budget: Budget = SUPERVISED,
                        device: torch.device | str = "cpu", seed: int = 0, log=None) -> tuple[Classifier, float | None]:
    """The same backbone + linear layer from random init, trained on the same labels with the same budget."""
    model = random_classifier(reader, backbone, num_classes, seed)
    accuracy = fit_classifier(model, labeled, test, reader, device=device, seed=seed, log=log, **budget.kwargs())
    return model, accuracy
