"""Every model of one label draw, each trained at most once.

The choice stage asks a draw's `DrawFits` for every candidate of a grid; the fit stage asks every draw for
the chosen ones. A model is keyed by what it depends on, so the first draw's chosen models are the ones
the choices already trained, and no stage needs to know which draw came first. Every fit is seeded from
the draw (contrastive.evaluate.fit forks the random stream), so the order of the asks does not matter.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from contrastive.evaluate.baselines import spreading_predictor
from contrastive.evaluate.classifier import classifier_from, random_classifier
from contrastive.evaluate.distill import distill
from contrastive.evaluate.features import extract_features
from contrastive.evaluate.finetune import finetune, supervised_baseline
from contrastive.evaluate.probe import fit_linear_probe
from contrastive.evaluate.teachers import AveragedTeacher, spreading_teacher
from contrastive.pipeline.config import PipelineConfig

Predictor = Callable[[object], np.ndarray]  # items -> class probabilities (N, C)
TEACHERS = ("finetune", "finetune+spreading")  # what may label the unlabelled items for distillation


def network_predictor(model, reader, device) -> Predictor:
    def predict(items) -> np.ndarray:
        logits, _ = extract_features(model, items, reader, device)
        return torch.softmax(logits.float(), dim=1).numpy()

    return predict


def accuracy(probs: np.ndarray, labels: torch.Tensor) -> float:
    return float((probs.argmax(axis=1) == labels.numpy()).mean())


class FrozenFeatures:
    """The pretrained encoder's features of a split, computed once per split (held by identity)."""

    def __init__(self, encoder, reader, device):
        self.encoder, self.reader, self.device = encoder, reader, device
        self.seen: list[tuple[object, torch.Tensor]] = []

    def __call__(self, items) -> torch.Tensor:
        for split, features in self.seen:
            if split is items:
                return features
        features = extract_features(self.encoder, items, self.reader, self.device)[0]
        self.seen.append((items, features))
        return features


@dataclass(frozen=True)
class Stage:
    """What every draw's fits share: the settings, the pretrained network, the splits and the device."""

    cfg: PipelineConfig
    pretrained: object  # contrastive.evaluate.pretrained.Pretrained
    backbone: str
    student: str
    n_classes: int
    train: object
    val: object
    features: FrozenFeatures
    device: torch.device

    @property
    def reader(self):
        return self.pretrained.reader

    def val_accuracy(self, model) -> float:
        return accuracy(network_predictor(model, self.reader, self.device)(self.val), self.val.labels)


class DrawFits:
    """The models of one label draw (`idx`: the labelled training indices), trained on first ask."""

    def __init__(self, stage: Stage, idx: torch.Tensor, seed: int):
        self.stage, self.n_classes, self.idx, self.seed = stage, stage.n_classes, idx, seed
        self.labeled = stage.train.subset(idx)
        self.models: dict[tuple, object] = {}

    def _once(self, key: tuple, make: Callable[[], object]):
        if key not in self.models:
            self.models[key] = make()
        return self.models[key]

    def supervised(self, lr: float):
        s = self.stage
        return self._once(("supervised", lr), lambda: supervised_baseline(
            s.reader, s.backbone, self.n_classes, self.labeled, None,
            budget=dataclasses.replace(s.cfg.supervised, lr=lr), seed=self.seed, device=s.device)[0])

    def finetuned(self, lr: float):
        s = self.stage
        return self._once(("finetune", lr), lambda: finetune(
            s.pretrained, self.labeled, None, self.n_classes, budget=dataclasses.replace(s.cfg.finetune, lr=lr),
            seed=self.seed, device=s.device)[0])

    def probe(self):
        s = self.stage
        return self._once(("linear",), lambda: fit_linear_probe(s.pretrained.encoder, self.labeled, self.n_classes,
                                                                s.reader, device=s.device))

    def spreading(self) -> Callable[[torch.Tensor], np.ndarray]:
        """Label spreading on the pretrained features: features (N, D) -> class probabilities (N, C)."""
        s = self.stage
        return self._once(("encoder_spreading",), lambda: spreading_predictor(
            s.features(s.train)[self.idx], s.train.labels[self.idx], s.features(s.train), self.n_classes, self.seed))

    def teacher(self, name: str, finetune_lr: float):
        """The network that labels the unlabelled items: the fine-tuned one, or its average with label
        spreading on the pretrained features (contrastive.evaluate.teachers)."""
        if name == "finetune":
            return self.finetuned(finetune_lr)
        s = self.stage
        return self._once(("teacher", name, finetune_lr), lambda: AveragedTeacher(
            self.finetuned(finetune_lr), spreading_teacher(s.pretrained.encoder, s.features(s.train), self.idx,
                                                           s.train.labels[self.idx], self.n_classes,
                                                           self.seed)).eval())

    def student(self, teacher: str, finetune_lr: float, temperature: float, lr_factor: float):
        """A student distilled from `teacher` on every training item (SimCLRv2 sec. 2.3, eq. 3)."""
        return self._once(("distill", teacher, finetune_lr, temperature, lr_factor),
                          lambda: self._distilled(teacher, finetune_lr, temperature, lr_factor))

    def chosen_student(self, choices) -> object:
        """The student of a fraction's Choices (contrastive.pipeline.results.Choices)."""
        return self.student(choices.distill_teacher, choices.finetune_lr, choices.distill_temperature,
                            choices.distill_lr_factor)

    def _distilled(self, teacher: str, finetune_lr: float, temperature: float, lr_factor: float):
        s = self.stage
        student, budget = student_for(s.cfg, s.pretrained, s.reader, s.student, self.n_classes, self.seed,
                                      finetune_lr, self.finetuned(finetune_lr))
        mask = torch.zeros(len(s.train), dtype=torch.bool).index_fill_(0, self.idx, True)
        distill(self.teacher(teacher, finetune_lr), student, s.train, None, s.reader, temperature=temperature,
                alpha=s.cfg.distill_alpha, labeled_mask=mask,
                budget=dataclasses.replace(budget, lr=budget.lr * lr_factor), seed=self.seed,
                student_views=s.cfg.distill_student_views, teacher_views=s.cfg.distill_teacher_views,
                device=s.device)
        return student


def student_for(cfg: PipelineConfig, pretrained, reader, student_name: str, n_classes: int, seed: int,
                finetune_lr: float, finetuned=None):
    """(the distillation student, its budget). With cfg.distill_init = finetuned and the same network, the
    student is a copy of the fine-tuned network `finetuned` and trains at fine-tuning's learning rate: it
    starts where the teacher is. With pretrained and the same network, the student starts from the
    pretrained encoder (a new linear layer) and trains at the learning rate fine-tuning chose on
    validation: the distill budget's lr (0.1, for random init) wrecked the pretrained features on the
    digits (validation 0.79 against its 0.92 teacher). Else a random network of `student_name` at the
    distill budget's lr."""
    same = student_name == pretrained.record["backbone"]
    if cfg.distill_init == "finetuned" and same and finetuned is not None:
        return copy.deepcopy(finetuned), dataclasses.replace(cfg.distill, lr=finetune_lr)
    if cfg.distill_init in ("finetuned", "pretrained") and same:
        student = classifier_from(pretrained, n_classes, from_head_layer=True, seed=seed + 1)
        return student, dataclasses.replace(cfg.distill, lr=finetune_lr)
    return random_classifier(reader, student_name, n_classes, seed=seed + 1), cfg.distill
