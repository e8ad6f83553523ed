"""A stage that trains a network further (the `semi` network, the distilled student) is judged against its
start on validation: the better of the two is kept, and a collapse is named, never reported as a result.

A collapse shows in two ways this module names: a prediction that is one class for nearly every
validation item while the labels are not, and a training loss that did not fall from the first pass
to the last.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

ONE_CLASS_SHARE = 0.9  # a class predicted for this share of validation items, where the labels are more varied


@dataclass(frozen=True)
class Guard:
    """One draw's start and result on validation (accuracy; a task with a positive class: its PR-AUC), which was kept (the result unless it is below its start),
    and what went wrong in training."""

    start: float
    result: float
    problems: tuple[str, ...] = ()

    @property
    def kept(self) -> str:
        return "result" if self.result >= self.start else "start"

    def to_json(self) -> dict:
        return {"start": self.start, "result": self.result, "kept": self.kept, "problems": list(self.problems)}

    @classmethod
    def from_json(cls, d: dict) -> "Guard":
        return cls(d["start"], d["result"], tuple(d.get("problems", ())))

    def describe(self, name: str) -> str:
        """'semi kept its start: validation 0.9500 -> 0.1000 (predicts class 3 for 98% of validation items)'."""
        why = f" ({'; '.join(self.problems)})" if self.problems else ""
        verb = "improved on" if self.result > self.start else "matched" if self.result == self.start else "fell below"
        kept = "" if self.kept == "result" else "; its start is kept"
        return f"{name} {verb} its start on validation: {self.start:.4f} -> {self.result:.4f}{why}{kept}"


def one_class(probs: np.ndarray, labels: torch.Tensor) -> str | None:
    """'predicts class c for 97% of validation items' when one class takes ONE_CLASS_SHARE of the predictions
    while no class holds that share of the labels; else None."""
    if len(labels) == 0:
        return None
    predicted = np.bincount(probs.argmax(axis=1), minlength=probs.shape[1])
    share = predicted.max() / len(labels)
    label_share = np.bincount(labels.numpy(), minlength=probs.shape[1]).max() / len(labels)
    if share >= ONE_CLASS_SHARE and label_share < ONE_CLASS_SHARE:
        return f"predicts class {int(predicted.argmax())} for {share:.0%} of validation items"
    return None


def loss_stalled(history: list[float]) -> str | None:
    """'the loss did not fall (0.41 -> 0.52 over 5 passes)' when the last pass's mean loss is not below the
    first's; None with fewer than two passes."""
    if len(history) < 2 or history[-1] < history[0]:
        return None
    return f"the loss did not fall ({history[0]:.3g} -> {history[-1]:.3g} over {len(history)} passes)"


def problems_of(probs: np.ndarray, labels: torch.Tensor, history: list[float]) -> tuple[str, ...]:
    return tuple(p for p in (one_class(probs, labels), loss_stalled(history)) if p is not None)
