"""A network trained on from a start (semi, the distilled student) never reports a collapse: the better of start
and result on validation is kept, both numbers are recorded, and a one-class prediction or a loss that did not
fall is named. And the validation-size rule: a fraction's choices read no more labels than its draw holds."""

import numpy as np
import pytest
import torch

from contrastive.pipeline import fits as fits_module
from contrastive.pipeline.config import PipelineConfig
from contrastive.pipeline.guard import Guard, loss_stalled, one_class, problems_of
from contrastive.protocol import capped_validation


def test_one_class_is_named_only_where_the_labels_are_not_one_class():
    labels = torch.tensor([0, 1, 2, 3] * 5)
    collapsed = np.eye(4)[[3] * 19 + [0]]  # class 3 for 95% of items
    assert one_class(collapsed, labels) == "predicts class 3 for 95% of validation items"
    assert one_class(np.eye(4)[labels.numpy()], labels) is None  # right answers
    assert one_class(collapsed, torch.tensor([3] * 19 + [0])) is None  # the labels are one class too


def test_a_loss_that_did_not_fall_is_named():
    assert loss_stalled([0.9, 0.5, 0.3]) is None
    assert loss_stalled([0.4, 0.6]) == "the loss did not fall (0.4 -> 0.6 over 2 passes)"
    assert loss_stalled([0.4]) is None  # one pass: nothing to compare
    assert problems_of(np.eye(2)[[0, 0, 0, 0]], torch.tensor([0, 1, 0, 1]), [1.0, 1.0]) == (
        "predicts class 0 for 100% of validation items", "the loss did not fall (1 -> 1 over 2 passes)")


def test_the_guard_keeps_the_result_unless_it_is_below_its_start():
    assert Guard(0.9, 0.9).kept == "result"  # a tie keeps the result
    fell = Guard(0.9, 0.1, ("predicts class 3 for 98% of validation items",))
    assert fell.kept == "start"
    assert Guard.from_json(fell.to_json()) == fell
    assert fell.describe("semi") == ("semi fell below its start on validation: 0.9000 -> 0.1000 (predicts class 3 for "
                                     "98% of validation items); its start is kept")


class Net:
    """A stand-in network whose validation accuracy is given."""

    def __init__(self, accuracy: float):
        self.accuracy = accuracy


def guarded_draw(monkeypatch, n_val=10):
    labels = torch.tensor([0, 1] * (n_val // 2))
    val = type("Val", (), {"labels": labels})()
    stage = fits_module.Stage(PipelineConfig(), pretrained=None, backbone="b", student="b", n_classes=2, train=None,
                              val=val, features=None, device=torch.device("cpu"), semi=True)

    def probs(self, model):  # right on the first round(accuracy * n) items, then class 0
        right = round(model.accuracy * n_val)
        predicted = torch.cat([labels[:right], torch.zeros(n_val - right, dtype=torch.int64)])
        return np.eye(2)[predicted.numpy()]

    monkeypatch.setattr(fits_module.Stage, "val_probs", probs)
    draw = fits_module.DrawFits.__new__(fits_module.DrawFits)
    draw.stage, draw.models, draw.guards, draw.results = stage, {}, {}, {}
    return draw


def test_a_collapsed_student_is_caught_and_its_start_kept(monkeypatch):
    draw = guarded_draw(monkeypatch)
    start = Net(0.9)

    def collapse(history):
        history += [0.3, 0.5]  # the loss rose
        return Net(0.0)  # class 0 for every item: right on half of them

    kept = draw._guarded(("distill", "x"), start, collapse)
    assert kept is start
    guard = draw.guards[("distill", "x")]
    assert (guard.start, guard.result, guard.kept) == (0.9, 0.5, "start")
    assert guard.problems == ("predicts class 0 for 100% of validation items",
                              "the loss did not fall (0.3 -> 0.5 over 2 passes)")
    assert draw._guarded(("distill", "x"), start, collapse) is start  # asked again: not trained again
    assert draw.results[("distill", "x")].accuracy == 0.0  # what training made of it, for the choice of T and lr


def test_a_student_that_improves_is_kept(monkeypatch):
    draw = guarded_draw(monkeypatch)
    better = Net(1.0)
    assert draw._guarded(("semi", 0.01), Net(0.6), lambda history: better) is better  # 0.6 + 0.2 right by chance
    assert draw.guards[("semi", 0.01)] == Guard(0.8, 1.0, ())


@pytest.mark.parametrize("n", [1, 7, 40, 399])
def test_the_validation_a_fraction_reads_holds_no_more_labels_than_its_draw(n):
    labels = torch.arange(400) % 10
    keep = capped_validation(labels, n, seed=0)
    assert len(keep) <= n and len(set(keep.tolist())) == len(keep) and keep.tolist() == sorted(keep.tolist())
    assert len(keep) >= min(n, 10) * 0.9  # nearly as many as allowed
    counts = torch.bincount(labels[keep], minlength=10)
    if n >= 10:
        assert counts.max() - counts.min() <= 1 + n // 40  # class-balanced
    assert torch.equal(capped_validation(labels, n, seed=0), keep)  # the same seed, the same items
    assert torch.equal(capped_validation(labels, 400, seed=0), torch.arange(400))  # not fewer than all: all


def test_fraction_validation_caps_the_stage_unless_all_is_asked(tiny_data):
    from contrastive.pipeline.stages import fraction_validation

    val = tiny_data.train  # 64 items
    stage = fits_module.Stage(PipelineConfig(), pretrained=None, backbone="b", student="b", n_classes=4, train=None,
                              val=val, features=None, device=torch.device("cpu"), semi=True)
    assert len(fraction_validation(PipelineConfig(), stage, 12).val) == 12
    assert fraction_validation(PipelineConfig(), stage, 100) is stage
    assert fraction_validation(PipelineConfig(validation_labels="all"), stage, 12) is stage


def test_choices_and_guards_read_pr_auc_where_the_task_names_a_positive_class(monkeypatch):
    """Issue 24: on a binary task with a positive class every choice and guard compares the positive class's
    PR-AUC, the table's measure; accuracy can prefer a model that ranks the positives worse."""
    labels = torch.tensor([0] * 6 + [1] * 4)
    ranks_well = np.stack([1 - np.r_[[0.1] * 6, [0.4] * 4], np.r_[[0.1] * 6, [0.4] * 4]], 1)  # all class 0
    accurate = np.eye(2)[[0, 0, 0, 0, 0, 1, 1, 1, 1, 0]] * 0.8 + 0.1  # 8 of 10 right, one positive ranked low
    assert fits_module.validation_score(accurate, labels) > fits_module.validation_score(ranks_well, labels)
    assert fits_module.validation_score(ranks_well, labels, 1) == 1.0
    assert fits_module.validation_score(accurate, labels, 1) < 1.0
    val = type("Val", (), {"labels": labels})()
    stage = fits_module.Stage(PipelineConfig(), pretrained=None, backbone="b", student="b", n_classes=2, train=None,
                              val=val, features=None, device=torch.device("cpu"), semi=False, positive=1)
    monkeypatch.setattr(fits_module.Stage, "val_probs", lambda self, model: model)
    assert stage.val_score(ranks_well) > stage.val_score(accurate)
    draw = fits_module.DrawFits.__new__(fits_module.DrawFits)
    draw.stage, draw.models, draw.guards, draw.results = stage, {}, {}, {}
    assert draw._guarded(("distill",), accurate, lambda history: ranks_well) is ranks_well  # PR-AUC rose
    assert draw.guards[("distill",)].result == 1.0
