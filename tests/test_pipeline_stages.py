"""The pipeline's stages and hand-offs: each draw's models trained once, Results and results.json, the forecast."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from contrastive.evaluate.fit import Budget, fit_classifier
from contrastive.pipeline import fits as fits_module
from contrastive.pipeline.choose import choose_distillation, choose_teacher
from contrastive.pipeline.config import PipelineConfig
from contrastive.pipeline.forecast import Sizes, fit_passes, pipeline_seconds
from contrastive.pipeline.results import Cell, Choices, Results, Row
from contrastive.errors import ContrastiveError
from helpers import quiet


def stage_stub(train_labels):
    """A fits.Stage whose splits are label tensors only (the stubbed fits below never read items)."""
    train = type("Items", (), {"labels": train_labels, "subset": lambda self, idx: ("labelled", tuple(idx.tolist())),
                               "__len__": lambda self: len(train_labels)})()
    return fits_module.Stage(PipelineConfig(), pretrained=None, backbone="b", student="b", n_classes=2, train=train,
                             val=None, features=None, device=torch.device("cpu"), semi=True)


def test_a_draw_trains_each_model_once_whoever_asks(monkeypatch):
    trained = []

    def fake_supervised(reader, backbone, n_classes, labeled, test, *, budget, seed, device):
        trained.append(("supervised", budget.lr, seed))
        return object(), None

    monkeypatch.setattr(fits_module, "supervised_baseline", fake_supervised)
    monkeypatch.setattr(fits_module.Stage, "reader", property(lambda self: None))
    draw = fits_module.DrawFits(stage_stub(torch.tensor([0, 1, 0, 1])), torch.tensor([0, 1]), seed=7)
    first = draw.supervised(0.1)  # the choice stage's candidate
    assert draw.supervised(0.1) is first  # the fit stage's ask: the same model, not a second fit
    draw.supervised(0.3)
    assert trained == [("supervised", 0.1, 7), ("supervised", 0.3, 7)]


def test_a_given_teacher_is_not_scored_and_auto_takes_the_best_one():
    scored = []
    candidates = ("finetune", "finetune+spreading", "semi", "semi+spreading")

    def score(name):
        scored.append(name)
        return {"finetune": 0.5, "finetune+spreading": 0.75, "semi": 0.8, "semi+spreading": 0.8}[name]

    assert choose_teacher("finetune", score, quiet, candidates) == ("finetune", None) and scored == []
    best, scores = choose_teacher("auto", score, quiet, candidates)
    assert best == "semi" and list(scores) == list(candidates)  # a tie goes to the first
    assert choose_teacher("finetune+spreading", lambda n: {"finetune": 0.9}.get(n, 0.1), quiet, candidates)[0] == \
        "finetune+spreading"  # named: kept even where the other scores higher
    with pytest.raises(ContrastiveError, match="--distill-teacher semi is not available"):
        choose_teacher("semi", score, quiet, candidates[:2])  # a modality without strong views has no semi network


def test_distillation_grid_scores_every_pair_and_the_first_best_wins_a_tie():
    best, named = choose_distillation(lambda t, f: 1.0 if f == 1.0 else 0.5, (0.1, 1.0), (1.0, 0.1), quiet)
    assert best == (0.1, 1.0) and list(named) == ["T 0.1, lr x1", "T 0.1, lr x0.1", "T 1, lr x1", "T 1, lr x0.1"]


def row(values: dict, draws=2, f1=None, pr_auc=None) -> Row:
    cells = {c: Cell(tuple(v), tuple(f1[c]) if f1 else (), tuple(pr_auc[c]) if pr_auc else ())
             for c, v in values.items()}
    choices = Choices(0.1, {"0.1": 0.5}, 0.03, {"0.03": 0.6}, "finetune", None, 0.1, 1.0, {"T 0.1, lr x1": 0.7})
    return Row(0.01, 10, draws, choices, {c: 0.5 for c in values}, cells)


def test_the_gain_is_over_the_best_baseline_not_the_weakest():
    r = row({"supervised": [0.5, 0.7], "pixel_knn": [0.8, 0.8], "linear": [0.9, 0.7], "finetune": [0.9, 0.95]})
    assert r.best_baseline == "pixel_knn"
    assert r.gain == pytest.approx(0.925 - 0.8)
    assert r.cells["supervised"].sd == pytest.approx(math.sqrt(0.02))  # sample sd (n - 1)


def test_results_json_keeps_its_format_and_reads_back():
    results = Results("mnist", "simclr", "b", "b", None, None,
                      {"0.01": row({"supervised": [0.5, 0.7], "linear": [0.6, 0.8]})})
    out = results.to_json()
    r = out["label_fractions"]["0.01"]
    assert list(r) == ["n_labels", "draws", "choices", "validation", "supervised", "linear", "sd", "values",
                       "best_baseline", "gain"]  # no labels_used or guards: the row was made without them
    assert r["supervised"] == pytest.approx(0.6) and r["values"]["linear"] == [0.6, 0.8]
    assert "distill_teacher_validation" not in r["choices"]  # a given teacher: nothing was scored
    assert Results.from_json(out).to_json() == out


def test_detection_rows_carry_f1_and_pr_auc_means():
    r = row({"supervised": [0.5, 0.7], "linear": [0.6, 0.8]}, f1={"supervised": [0.2, 0.4], "linear": [0.5, 0.7]},
            pr_auc={"supervised": [0.3, 0.5], "linear": [0.9, 0.7]}).to_json()
    assert r["f1"] == pytest.approx({"supervised": 0.3, "linear": 0.6})
    assert r["pr_auc"] == pytest.approx({"supervised": 0.4, "linear": 0.8})
    assert "f1" not in row({"supervised": [0.5], "linear": [0.6]}).to_json()  # accuracy only without a positive class


@pytest.mark.parametrize("n,batch,epochs,min_steps", [(40, 256, 30, 200), (4000, 256, 2, 0), (100, 16, 3, 5)])
def test_the_budget_counts_the_steps_the_fit_takes(n, batch, epochs, min_steps):
    budget = Budget(epochs=epochs, min_steps=min_steps, batch_size=batch)
    per_epoch = math.ceil(n / min(batch, n))
    assert budget.steps(n) == max(epochs * per_epoch, min_steps)
    assert budget.batch(n) == math.ceil(n / per_epoch)
    assert fit_passes(budget, n) == budget.steps(n) * budget.batch(n)


def test_fit_classifier_takes_the_budgets_steps(tiny_data):
    from contrastive.evaluate.classifier import random_classifier
    from contrastive.modality import reader_for

    items = tiny_data.train
    reader = reader_for(tiny_data, tiny_data_options(tiny_data))
    budget = Budget(epochs=1, min_steps=5, batch_size=16)
    lines = []
    fit_classifier(random_classifier(reader, "small_cnn", tiny_data.num_classes), items, None, reader,
                   log=lines.append, **budget.kwargs())
    assert lines[-1].split()[3] == f"{budget.steps(len(items))}/{budget.steps(len(items))}"


def tiny_data_options(data):
    from contrastive.modality import modality_of

    modality = modality_of(data)
    return modality.resolve(modality.options({}), data)


def test_the_forecast_grows_with_each_stage_it_prices():
    cfg, sizes = PipelineConfig(), Sizes(3600, 400, 1000)
    pre, rest = pipeline_seconds(cfg, sizes, epoch_seconds=10.0, epochs_left=29)
    assert pre == pytest.approx(300.0)
    one_draw = dataclasses.replace(cfg, draws=(1,))
    assert pipeline_seconds(one_draw, sizes, 10.0, 29)[1] < rest  # fewer draws, less to fit
    wider = dataclasses.replace(cfg, finetune_lrs=(0.001, 0.003, 0.01, 0.03))
    assert pipeline_seconds(wider, sizes, 10.0, 29)[1] > rest
    slower = pipeline_seconds(cfg, sizes, 20.0, 29)
    assert slower[1] == pytest.approx(2 * rest)  # priced at the first epoch's rate


def test_network_costs_count_each_networks_parameters_and_time_it_on_the_split(tiny_data):
    from contrastive.evaluate.classifier import random_classifier
    from contrastive.modality import reader_for
    from contrastive.pipeline.scores import network_costs

    reader = reader_for(tiny_data, tiny_data_options(tiny_data))
    big = random_classifier(reader, "small_cnn_grid", tiny_data.num_classes)
    small = random_classifier(reader, "small_cnn_grid_half", tiny_data.num_classes)
    costs = network_costs({"teacher": ("small_cnn_grid", big), "student": ("small_cnn_grid_half", small)},
                          tiny_data.test, reader, "cpu", repeats=1)
    assert costs["teacher"].parameters == sum(p.numel() for p in big.parameters())
    assert costs["student"].backbone == "small_cnn_grid_half"
    assert 0.2 < costs["student"].parameters / costs["teacher"].parameters < 0.3  # half the width: about a quarter
    assert all(c.test_seconds > 0 for c in costs.values())


def test_labels_used_guards_and_networks_round_trip_through_results_json():
    from contrastive.pipeline.guard import Guard
    from contrastive.pipeline.results import NetworkCost

    base = row({"supervised": [0.5, 0.7], "finetune": [0.8, 0.9], "semi": [0.85, 0.9]})
    guards = {"semi": [Guard(0.8, 0.85), Guard(0.9, 0.5, ("predicts class 1 for 95% of validation items",))]}
    r = dataclasses.replace(base, labels_used=20, guards=guards)
    results = Results("mnist", "simclr", "b", "s", None, None, {"0.01": r},
                      {"teacher": NetworkCost("b", 1000, 0.5), "student": NetworkCost("s", 250, 0.2)})
    out = results.to_json()
    assert out["label_fractions"]["0.01"]["labels_used"] == 20
    assert out["label_fractions"]["0.01"]["guards"]["semi"][1] == {
        "start": 0.9, "result": 0.5, "kept": "start", "problems": ["predicts class 1 for 95% of validation items"]}
    assert out["networks"]["student"] == {"backbone": "s", "parameters": 250, "test_seconds": 0.2}
    back = Results.from_json(out)
    assert back.to_json() == out and back.rows["0.01"].kept_start("semi") == 1
    from contrastive.report import format_table, guard_lines, networks_line

    assert "| 1% | 10 | 20 | 2 |" in format_table(back)
    assert "- 1% semi: below its start on validation on 1 of 2 draws" in "\n".join(guard_lines(back))
    assert "25% of teacher `b`'s 1,000" in networks_line(back)[0]


class Scored:
    """Made-up items: labels and the positive-class probability a column gives each."""

    def __init__(self, labels, positive_probs):
        self.labels = torch.tensor(labels)
        self.probs = np.stack([1 - np.array(positive_probs), np.array(positive_probs)], axis=1)

    def __len__(self):
        return len(self.labels)


def test_f1_is_read_at_the_threshold_validation_chose_not_the_one_test_would():
    from contrastive.pipeline.scores import best_threshold, final_scores, validation_thresholds

    val = Scored([0, 0, 1, 1], [0.1, 0.3, 0.35, 0.9])  # F1 1 above 0.3: the midpoint of 0.3 and 0.35 taken
    test = Scored([0, 0, 1, 1], [0.2, 0.5, 0.6, 0.7])  # F1 1 above 0.5; at 0.325 item 2 is a false positive
    column = {"made_up": lambda items: items.probs}
    thresholds = validation_thresholds({"made_up": val.probs}, val.labels, positive=1)
    assert thresholds == {"made_up": pytest.approx(0.325)}
    assert best_threshold(test.probs[:, 1], test.labels.numpy() == 1) == pytest.approx(0.55)  # test's own pick
    cells, share = final_scores([column], test, 1, [thresholds])
    assert cells["made_up"].thresholds == (pytest.approx(0.325),)
    assert cells["made_up"].f1 == (pytest.approx(0.8),)  # 2 true positives, 1 false: 2 * 2 / (2 * 2 + 1)
    assert cells["made_up"].pr_auc == (pytest.approx(1.0),) and share == 0.5
    assert best_threshold(np.array([0.2, 0.7]), np.array([False, False])) == 0.5  # no positive: no choice
    assert best_threshold(np.array([0.2, 0.7]), np.array([True, True])) == 0.2  # nothing below: the lowest score


def test_the_always_positive_floor_is_what_scikit_learn_scores_that_rule():
    from contrastive.pipeline.scores import final_scores

    test = Scored([1, 0, 0, 0, 1, 0, 0, 0], [0.5] * 8)  # p = 0.25
    cells, share = final_scores([{"always": lambda items: items.probs}], test, 1, [{"always": 0.0}])
    floor = dataclasses.replace(row({"supervised": [0.5]}, draws=1), positive_share=share).floor
    assert floor == {"f1": pytest.approx(0.4), "pr_auc": pytest.approx(0.25)}  # 2p / (1 + p), p
    assert cells["always"].f1[0] == pytest.approx(floor["f1"]) and cells["always"].pr_auc[0] == pytest.approx(0.25)


def detection_row() -> Row:
    r = row({"supervised": [0.5, 0.7], "tfidf": [0.8, 0.9], "linear": [0.6, 0.8]},
            f1={"supervised": [0.2, 0.4], "tfidf": [0.5, 0.5], "linear": [0.7, 0.5]},
            pr_auc={"supervised": [0.3, 0.5], "tfidf": [0.8, 0.6], "linear": [0.9, 0.7]})
    cells = {c: dataclasses.replace(cell, thresholds=(0.4, 0.6)) for c, cell in r.cells.items()}
    return dataclasses.replace(r, cells=cells, positive_share=0.2)


def test_detection_rows_keep_sds_values_thresholds_floor_and_gains_and_read_back():
    results = Results("juliet", "simclr", "cnn", "cnn", None, None, {"0.01": detection_row()})
    out = results.to_json()
    r = out["label_fractions"]["0.01"]
    assert r["f1"] == pytest.approx({"supervised": 0.3, "tfidf": 0.5, "linear": 0.6})
    assert r["f1_sd"]["supervised"] == pytest.approx(math.sqrt(0.02)) and r["f1_sd"]["tfidf"] == 0.0
    assert r["pr_auc_values"]["linear"] == [0.9, 0.7] and r["thresholds"]["tfidf"] == [0.4, 0.6]
    assert r["floor"] == {"f1": pytest.approx(2 * 0.2 / 1.2), "pr_auc": 0.2}
    assert r["best_baseline"] == "tfidf" and r["gain"] == pytest.approx(0.7 - 0.85)  # accuracy
    assert r["gain_f1"] == {"gain": pytest.approx(0.6 - 0.5), "baseline": "tfidf"}
    assert r["gain_pr_auc"] == {"gain": pytest.approx(0.8 - 0.7), "baseline": "tfidf"}
    back = Results.from_json(out)
    assert back.to_json() == out
    assert back.rows["0.01"].cells["linear"].f1 == (0.7, 0.5)  # per draw, not the mean repeated
    from contrastive.report import format_table

    table = format_table(back)
    assert "| 1% | f1 | 0.3000 ± 0.1414 | 0.5000 ± 0.0000 | 0.6000 ± 0.1414 | 0.3333 | +0.1000 (tfidf) |" in table
    assert "| 1% | pr_auc |" in table and "floor: all positive" in table


def test_a_baseline_is_fitted_once_on_the_draw_and_asked_for_every_split():
    from contrastive.pipeline.stages import baseline_predictor

    fits = []

    def baseline(labeled, pool, val, num_classes, seed, positive=None):
        fits.append((labeled, pool, val, num_classes, seed, positive))
        return lambda items: np.full((len(items), num_classes), float(len(fits)))

    predict = baseline_predictor(baseline, "labelled", "pool", "val", 2, 7, positive=1)
    assert fits == []  # fitted on the first ask, where a baseline that cannot run is left out
    assert predict([0, 1, 2]).shape == (3, 2) and (predict([0]) == 1.0).all()
    assert fits == [("labelled", "pool", "val", 2, 7, 1)]


def test_a_student_of_another_backbone_learns_from_the_teacher_alone_on_its_own_view(monkeypatch):
    # From random init, alpha 0.5 with strong views ended at 0.689 where alpha 0 on the light view read 0.962
    # (fits.RANDOM_INIT_STUDENT); a student that starts as its teacher keeps the config's recipe.
    from types import SimpleNamespace

    monkeypatch.setattr(fits_module, "random_classifier", lambda reader, name, n, seed: ("random", name, seed))
    pretrained = SimpleNamespace(record={"backbone": "big"})
    cfg = PipelineConfig(distill_alpha=0.5, student_epochs=7)
    teacher = torch.nn.Linear(2, 2)
    copy_of_teacher, budget, recipe = fits_module.student_for(cfg, pretrained, None, "big", 2, 0, 0.03, teacher)
    assert isinstance(copy_of_teacher, torch.nn.Linear) and copy_of_teacher is not teacher and budget.lr == 0.03
    assert recipe == fits_module.StudentRecipe(0.5, cfg.distill_student_views, cfg.distill_teacher_views)
    student, budget, recipe = fits_module.student_for(cfg, pretrained, None, "small", 2, 0, 0.03, teacher)
    assert student == ("random", "small", 1) and budget.epochs == 7 and budget.lr == cfg.distill.lr
    assert recipe == fits_module.RANDOM_INIT_STUDENT
    assert (recipe.alpha, recipe.student_views, recipe.teacher_views) == (0.0, "light", "same")
