"""--tensorboard (the same numbers as metrics.jsonl, read back from the event files), the pipeline's
results in TensorBoard, and the report's UMAP beside its t-SNE (umap-learn faked: the tests run without it)."""

import json
import sys
import time
import types

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from contrastive import report
from contrastive.checkpoint import list_checkpoints
from contrastive.cli import main
from contrastive.errors import ContrastiveError
from contrastive.evaluate.pretrained import load_pretrained
from contrastive.pipeline.results import Results
from contrastive.report import format_table, write_report
from contrastive.tensorboard import MISSING, TensorBoardLog, log_results
from contrastive.train import pretrain
from helpers import make_splits, quiet, tiny_config


def read_events(folder) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})  # 0: keep every event
    events.Reload()
    return events


def scalars(events: EventAccumulator, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in events.Scalars(tag)}


def f32(value: float) -> float:
    """What TensorBoard stores of a float (a 32-bit value)."""
    return float(np.float32(value))


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """2 epochs x 4 steps, kNN every epoch, a step line every 2 steps, TensorBoard on."""
    out = tmp_path_factory.mktemp("tb") / "run"
    result = pretrain(tiny_config(out, "simclr", knn_every=1, log_every=2, tensorboard=True), data=make_splits(),
                      log=quiet)
    return result, metrics(result.run_dir), read_events(result.run_dir / "tensorboard")


def test_step_loss_and_lr_equal_metrics_jsonl(tiny_run):
    _, records, events = tiny_run
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [2, 4, 6, 8]  # every log_every steps, as metrics.jsonl
    assert scalars(events, "train/loss") == {r["step"]: f32(r["loss"]) for r in steps}
    assert scalars(events, "train/lr") == {r["step"]: f32(r["lr"]) for r in steps}  # the lr the step used


def test_epoch_loss_throughput_and_knn_equal_metrics_jsonl(tiny_run):
    _, records, events = tiny_run
    epochs = [r for r in records if "epoch_loss" in r]
    assert scalars(events, "epoch/loss") == {r["step"]: f32(r["epoch_loss"]) for r in epochs}
    assert scalars(events, "epoch/items_per_s") == {r["step"]: f32(r["items_per_s"]) for r in epochs}
    knn = [r for r in records if "knn_top1" in r]
    assert [r["step"] for r in knn] == [0, 4, 8]  # random init at step 0, then every epoch
    assert scalars(events, "knn/top1") == {r["step"]: f32(r["knn_top1"]) for r in knn}


def test_resumed_run_keeps_one_value_per_step(tmp_path):
    cfg = dict(knn_every=1, log_every=2, tensorboard=True)
    pretrain(tiny_config(tmp_path / "run", **cfg), data=make_splits(), log=quiet)
    (tmp_path / "run" / "checkpoint-epoch0002.pt").unlink()  # a crash in epoch 2, after its steps were logged
    time.sleep(1.1)  # event files are read in name order, which starts with the second they were created
    pretrain(tiny_config(tmp_path / "run", resume=True, **cfg), data=make_splits(), log=quiet)
    events = read_events(tmp_path / "run" / "tensorboard")
    for tag, steps in {"train/loss": [2, 4, 6, 8], "knn/top1": [0, 4, 8], "epoch/loss": [4, 8]}.items():
        assert [e.step for e in events.Scalars(tag)] == steps, tag  # epoch 2 of the crashed run is hidden


def test_without_the_flag_no_tensorboard_folder(tmp_path):
    result = pretrain(tiny_config(tmp_path / "run", knn_every=0, epochs=1), data=make_splits(), log=quiet)
    assert (result.run_dir / "metrics.jsonl").exists()
    assert not (result.run_dir / "tensorboard").exists()


@pytest.fixture
def no_tensorboard(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed


def test_missing_package_is_one_line_before_training(no_tensorboard, tmp_path, capsys):
    with pytest.raises(ContrastiveError) as error:
        TensorBoardLog()
    assert str(error.value) == MISSING == ("--tensorboard needs the tensorboard package: "
                                           "pip install 'contrastive[tensorboard]'")
    with pytest.raises(ContrastiveError, match="needs the tensorboard package"):
        log_results(tmp_path / "tb", Results.from_json({"label_fractions": {}}))
    out = tmp_path / "run"
    assert main(["pretrain", "--tensorboard", "--epochs", "1", "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: {MISSING}\n"
    assert not list(out.glob("checkpoint-*.pt")) and not (out / "metrics.jsonl").exists()


RESULTS = Results.from_json({
    "dataset": "tiny", "method": "simclr", "backbone": "small_cnn", "student": "small_cnn", "knn_top1": 0.5,
    "label_fractions": {
        "0.01": {"n_labels": 4, "supervised": 0.25, "linear": 0.375, "finetune": 0.5, "distill": 0.625},
        "0.1": {"n_labels": 40, "supervised": 0.5, "linear": 0.6, "finetune": 0.7, "distill": 0.75},
        "1.0": {"n_labels": 400, "supervised": 0.9, "linear": 0.8, "finetune": 0.95, "distill": 0.9375},
        "0.005": {"n_labels": 2, "supervised": 0.125, "linear": 0.25, "finetune": 0.3, "distill": 0.35},
    },
})


def test_log_results_writes_one_tag_per_column_and_the_table(tmp_path):
    log_results(tmp_path / "tb", RESULTS)
    events = read_events(tmp_path / "tb")
    for column in ("supervised", "linear", "finetune", "distill"):
        # x in basis points: 0.5% keeps a step of its own beside 1%
        expected = {points: f32(RESULTS.rows[key].cells[column].mean)
                    for points, key in ((50, "0.005"), (100, "0.01"), (1000, "0.1"), (10000, "1.0"))}
        assert scalars(events, f"pipeline/{column}") == expected
    (text,) = events.Tensors("pipeline/results/text_summary")
    markdown = text.tensor_proto.string_val[0].decode()
    assert format_table(RESULTS) in markdown and "kNN top-1 0.5000" in markdown


# --- the report's UMAP -----------------------------------------------------------------------

class FakeUMAP:
    def __init__(self, **options):
        self.options = options

    def fit_transform(self, x):
        return x[:, :2]


@pytest.fixture
def fake_umap(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))


def report_of(tiny_run, out):
    """write_report as the pipeline calls it, on the tiny run's pretrained encoder."""
    result = tiny_run[0]
    pretrained = load_pretrained(list_checkpoints(result.run_dir)[0])
    out.mkdir()
    path = write_report(out, RESULTS, result.run_dir, pretrained.encoder, make_splits(), pretrained.reader, "cpu")
    return path.read_text()


def test_report_draws_umap_beside_tsne_when_umap_imports(tiny_run, fake_umap, tmp_path):
    text = report_of(tiny_run, tmp_path / "out")
    for name in ("tsne.png", "umap.png"):
        assert (tmp_path / "out" / name).stat().st_size > 1000
        assert f"![{name}]({name})" in text
    assert "install contrastive[umap]" not in text


def test_report_without_umap_says_how_to_get_it(tiny_run, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "umap", None)  # not importable, even where umap-learn is installed
    text = report_of(tiny_run, tmp_path / "out")
    assert (tmp_path / "out" / "tsne.png").exists() and not (tmp_path / "out" / "umap.png").exists()
    assert "umap.png" not in text
    assert text.splitlines().count("UMAP: install contrastive[umap] to draw it") == 1


def test_tsne_and_umap_draw_the_same_points_in_the_same_colours(fake_umap, monkeypatch, tmp_path):
    drawn = {}
    monkeypatch.setattr(report, "plot_scatter", lambda xy, y, classes, title, path: drawn.update({path.stem: (xy, y)}))
    features, labels = torch.randn(40, 8), torch.arange(40) % 4
    report.plot_tsne(features, labels, list("abcd"), tmp_path / "tsne.png")
    assert report.plot_umap(features, labels, list("abcd"), tmp_path / "umap.png")
    (tsne_xy, tsne_y), (umap_xy, umap_y) = drawn["tsne"], drawn["umap"]
    assert tsne_xy.shape == umap_xy.shape == (40, 2)
    np.testing.assert_array_equal(tsne_y, umap_y)  # same draw of points, same class of each
    x, _ = report.sample_embeddings(features, labels, seed=0, max_points=2000)
    np.testing.assert_array_equal(umap_xy, x[:, :2])  # the fake UMAP: the first two normalised coordinates


@pytest.mark.slow  # numba compiles UMAP on its first call after an install: about 13 s
def test_real_umap_draws_a_map(tmp_path):
    pytest.importorskip("umap")
    features, labels = torch.randn(60, 8), torch.arange(60) % 3
    assert report.plot_umap(features, labels, list("abc"), tmp_path / "umap.png")
    assert (tmp_path / "umap.png").stat().st_size > 1000
