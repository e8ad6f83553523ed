"""`contrastive pipeline` (contrastive/pipeline/) end to end: results.json's schema, the test split read
only at the end, the learning-rate grid, and --quick on the embedded digits."""

import json

import pytest

from contrastive.cli import main
from contrastive.config import PretrainConfig
from contrastive.evaluate.fit import Budget
from contrastive.pipeline import PipelineConfig, run_pipeline
from helpers import quiet


COLUMNS = {"supervised", "pixel_knn", "label_spreading", "linear", "encoder_spreading", "finetune", "semi", "distill"}


ROW_KEYS = COLUMNS | {"n_labels", "labels_used", "draws", "choices", "validation", "sd", "values", "best_baseline",
                      "gain", "guards"}


def tiny_pipeline(out, **kw) -> PipelineConfig:
    small = dict(epochs=1, min_steps=2, batch_size=16)
    return PipelineConfig(out=str(out), pretrain=PretrainConfig(epochs=1, batch_size=16), fractions=(0.25, 1.0),
                          draws=(2,), validation=0.25, supervised_lrs=(0.1,), finetune_lrs=(0.03,),
                          finetune=Budget(**small), supervised=Budget(**small),
                          distill=Budget(epochs=1, min_steps=0, batch_size=16),
                          semi=Budget(epochs=1, min_steps=0, batch_size=16, lr=0.03), tsne=False, **kw)


class Sealed:
    """A test split that records every read, and whether the pipeline's final evaluation made it."""

    def __init__(self, items):
        self.items, self.reads = items, []

    def _note(self):
        import inspect

        self.reads.append({f.function for f in inspect.stack()[2:]})

    def __len__(self):
        return len(self.items)

    def __getattr__(self, name):
        if name in ("images", "labels", "paths", "take", "subset", "__getitem__"):
            self._note()
        return getattr(self.items, name)

    def __getitem__(self, i):
        self._note()
        return self.items[i]


@pytest.mark.slow
def test_pipeline_writes_results_matching_the_schema_and_reads_test_only_at_the_end(tmp_path, tiny_data):
    import dataclasses

    sealed = Sealed(tiny_data.test)
    data = dataclasses.replace(tiny_data, test=sealed)
    lines = []
    results = run_pipeline(tiny_pipeline(tmp_path / "p"), data=data, log=lambda *a: lines.append(" ".join(a)))
    stages = ["pretrain", "fraction 0.25", "fraction 1.0", "test"]  # the data were given: no load stage
    seconds = results["protocol"]["seconds"]
    assert list(seconds) == stages and all(v > 0 for v in seconds.values())
    assert [line.split(":")[0] for line in lines if line.startswith("stage ")] == [f"stage {s}" for s in stages]
    assert sealed.reads and all({"final_scores", "final_knn", "network_costs", "write_report"} & stack
                                for stack in sealed.reads)
    on_disk = json.loads((tmp_path / "p" / "results.json").read_text())
    assert on_disk == results
    settings = json.loads((tmp_path / "p" / "pipeline.json").read_text())  # what a script reads the run back with
    assert settings["fractions"] == [0.25, 1.0] and settings["validation"] == 0.25 and "epochs" in settings["pretrain"]
    assert {"dataset", "method", "backbone", "student", "knn_top1", "label_fractions", "knn", "protocol",
            "networks"} == set(on_disk)
    for name in ("teacher", "student"):  # self-distillation: the same backbone, the same size
        assert on_disk["networks"][name]["parameters"] == on_disk["networks"]["teacher"]["parameters"] > 1000
        assert on_disk["networks"][name]["test_seconds"] > 0
    assert on_disk["protocol"]["n_validation"] == 16 and on_disk["protocol"]["n_train"] == 48  # 25% of each class
    assert list(on_disk["label_fractions"]) == ["0.25", "1.0"]
    for key, row in on_disk["label_fractions"].items():
        assert set(row) == ROW_KEYS
        assert all(0.0 <= row[c] <= 1.0 for c in COLUMNS)
        for c in COLUMNS:  # the mean is the mean of the kept per-draw values
            assert row[c] == pytest.approx(sum(row["values"][c]) / len(row["values"][c]))
        assert row["best_baseline"] in {"supervised", "pixel_knn", "label_spreading"}
        best = max(row[c] for c in ("linear", "encoder_spreading", "finetune", "semi", "distill"))
        assert row["gain"] == pytest.approx(best - max(row[c] for c in ("supervised", "pixel_knn", "label_spreading")))
        assert row["choices"]["supervised_lr"] == 0.1 and row["choices"]["finetune_lr"] == 0.03
        teachers = row["choices"]["distill_teacher_validation"]  # auto: the better teacher on validation
        assert set(teachers) == {"finetune", "finetune+spreading", "semi", "semi+spreading"}
        assert teachers[row["choices"]["distill_teacher"]] == max(teachers.values())  # a tie: the likelier one
        pairs = row["choices"]["distill_validation"]  # every (T, lr factor) of the grids, the best one kept
        grid = PipelineConfig().distill_temperatures, PipelineConfig().distill_lr_factors
        assert len(pairs) == len(grid[0]) * len(grid[1]) and max(pairs.values()) == pairs[
            f"T {row['choices']['distill_temperature']:g}, lr x{row['choices']['distill_lr_factor']:g}"]
    assert on_disk["label_fractions"]["0.25"]["draws"] == 2 and on_disk["label_fractions"]["1.0"]["draws"] == 1
    assert len(on_disk["label_fractions"]["0.25"]["values"]["finetune"]) == 2
    assert on_disk["label_fractions"]["1.0"]["n_labels"] == 48
    assert on_disk["label_fractions"]["0.25"]["n_labels"] == 12  # 3 of 12 per class
    # validation no larger than the labels it serves: 12 of the 16 validation items at 25%, all 16 at 100%
    assert on_disk["label_fractions"]["0.25"]["labels_used"] == 12 + 12
    assert on_disk["label_fractions"]["1.0"]["labels_used"] == 48 + 16
    for row in on_disk["label_fractions"].values():  # every draw's semi network and student against their starts
        assert set(row["guards"]) == {"semi", "distill"}
        for column, guards in row["guards"].items():
            assert len(guards) == row["draws"]
            for g in guards:
                assert g["kept"] == ("result" if g["result"] >= g["start"] else "start")
            # the column reports the better of start and result on every draw, never a collapse below its start
            kept = [max(g["start"], g["result"]) for g in guards]
            assert row["validation"][column] == pytest.approx(sum(kept) / len(kept))
    assert 0.0 <= on_disk["knn_top1"] <= 1.0 and on_disk["knn"]["raw"] is not None
    report = (tmp_path / "p" / "report.md").read_text()
    assert ("| labels | n | labels used | draws | supervised | pixel_knn | label_spreading | linear | "
            "encoder_spreading | finetune | semi | distill |") in report
    assert "Guards (a network trained on from a start" in report and "25% semi: below its start" in report
    assert " ± " in report  # two draws: mean ± sd
    for png in ("accuracy_vs_labels.png", "pretraining.png"):
        assert (tmp_path / "p" / png).stat().st_size > 1000
    draws = json.loads((tmp_path / "p" / "labeled-indices-0.25.json").read_text())
    assert len(draws) == 2 and draws[0] != draws[1] and all(len(d) == 12 and d == sorted(d) for d in draws)
    from contrastive.evaluate.classifier import load_classifier

    for name in ("finetune", "semi", "distill"):  # the pipeline keeps its classifiers of the first draw
        model, meta = load_classifier(tmp_path / "p" / "classifiers" / f"{name}-0.25.pt")
        assert meta["indices"] == draws[0] and meta["label_fraction"] == 0.25 and model.fc.out_features == 4


def test_the_learning_rate_grid_widens_while_the_best_sits_at_an_edge():
    from contrastive.pipeline.choose import choose_lr

    tried = []

    def score(lr):  # validation accuracy peaks at lr 0.9
        tried.append(lr)
        return 1 - abs(lr - 0.9)

    best, scores = choose_lr(score, (0.03, 0.1, 0.3), quiet, "x", max_extra=3)
    assert tried[:3] == [0.03, 0.1, 0.3] and tried[3] == pytest.approx(0.9)
    assert best == pytest.approx(0.9) and scores[str(best)] == max(scores.values())
    assert len(tried) == 5  # 2.7 was tried too: 0.9 then sat inside the grid
    best, _ = choose_lr(lambda lr: -abs(lr - 0.1), (0.03, 0.1, 0.3), quiet, "x")
    assert best == 0.1  # inside the grid at once: nothing more tried


@pytest.mark.slow
def test_cli_pipeline_quick_on_embedded_digits(tmp_path, capsys):
    out = tmp_path / "quick"
    assert main(["pipeline", "--quick", "--fractions", "0.1", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "mnist" and results["backbone"] == "small_cnn_grid"
    row = results["label_fractions"]["0.1"]
    assert abs(row["n_labels"] - 90) <= 5  # 10% of each class of the 900 quick images left after validation
    assert all(0.0 <= row[c] <= 1.0 for c in COLUMNS)
    printed = capsys.readouterr().out
    assert f"| 10% | {row['n_labels']} | {row['labels_used']} | 2 |" in printed
    assert row["labels_used"] == 2 * row["n_labels"]  # the choices read as many validation items as a draw has labels
    assert "kNN top-1 on validation (k=20): random-init encoder" in printed and "raw inputs" in printed
    assert "expected wall time of the whole pipeline" in printed
    assert "wall time of the whole pipeline: " in printed and "(forecast after the first epoch: " in printed
