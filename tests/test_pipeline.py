"""The few-label commands and `contrastive pipeline --quick`, end to end."""

import json

import pytest
import torch

from contrastive.cli import main
from contrastive.config import PretrainConfig
from contrastive.evaluate.fit import Budget
from contrastive.pipeline import PipelineConfig, run_pipeline
from contrastive.train import pretrain

SCHEMA_COLUMNS = {"n_labels", "supervised", "linear", "finetune", "distill"}


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def mnist_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "run"
    pretrain(PretrainConfig(method="simclr", epochs=1, batch_size=64, train_limit=256, out=str(out)), log=quiet)
    return out / "checkpoint-epoch0001.pt"


def test_pipeline_quick_writes_results_matching_the_schema(tmp_path, tiny_data):
    cfg = PipelineConfig(out=str(tmp_path / "p"), pretrain=PretrainConfig(epochs=1, batch_size=16), fractions=(0.25, 1.0),
                         finetune=Budget(epochs=1, min_steps=2, batch_size=16),
                         supervised=Budget(epochs=1, min_steps=2, batch_size=16),
                         distill=Budget(epochs=1, min_steps=0, batch_size=16), tsne=False)
    results = run_pipeline(cfg, data=tiny_data, log=quiet)
    on_disk = json.loads((tmp_path / "p" / "results.json").read_text())
    assert on_disk == results
    assert set(on_disk) == {"dataset", "method", "backbone", "student", "knn_top1", "label_fractions"}
    assert on_disk["method"] == "simclr" and on_disk["backbone"] == on_disk["student"]
    assert list(on_disk["label_fractions"]) == ["0.25", "1.0"]
    for key, row in on_disk["label_fractions"].items():
        assert set(row) == SCHEMA_COLUMNS
        assert all(0.0 <= row[c] <= 1.0 for c in SCHEMA_COLUMNS - {"n_labels"})
    assert on_disk["label_fractions"]["1.0"]["n_labels"] == 64
    assert on_disk["label_fractions"]["0.25"]["n_labels"] == 16  # 4 of 16 per class
    assert 0.0 <= on_disk["knn_top1"] <= 1.0
    report = (tmp_path / "p" / "report.md").read_text()
    assert "| labels | n | supervised | linear | finetune | distill |" in report
    for png in ("accuracy_vs_labels.png", "pretraining.png"):
        assert (tmp_path / "p" / png).stat().st_size > 1000
    indices = json.loads((tmp_path / "p" / "labeled-indices-0.25.json").read_text())
    assert len(indices) == 16 and indices == sorted(indices)
    from contrastive.evaluate.classifier import load_classifier

    for name in ("finetune", "distill"):  # the pipeline keeps its classifiers for predict / export
        model, meta = load_classifier(tmp_path / "p" / "classifiers" / f"{name}-0.25.pt")
        assert meta["indices"] == indices and meta["label_fraction"] == 0.25 and model.fc.out_features == 4


def test_cli_pipeline_quick_on_embedded_digits(tmp_path, capsys):
    out = tmp_path / "quick"
    assert main(["pipeline", "--quick", "--fractions", "0.1", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "mnist" and results["backbone"] == "small_cnn"
    row = results["label_fractions"]["0.1"]
    assert abs(row["n_labels"] - 100) <= 5  # 10% of each class of the 1,000-image quick draw, rounded
    assert all(0.0 <= row[c] <= 1.0 for c in ("supervised", "linear", "finetune", "distill"))
    printed = capsys.readouterr().out
    assert f"| 10% | {row['n_labels']} |" in printed
    assert "kNN top-1 (k=200): random-init encoder" in printed


def test_knn_linear_embed_commands(mnist_checkpoint, tmp_path, capsys):
    assert main(["knn", "--checkpoint", str(mnist_checkpoint)]) == 0
    assert "kNN top-1 (k=200, T=0.1) on mnist test:" in capsys.readouterr().out
    assert main(["linear", "--checkpoint", str(mnist_checkpoint), "--label-fraction", "0.05"]) == 0
    assert "frozen encoder unchanged" in capsys.readouterr().out
    out = tmp_path / "emb" / "test.npy"
    assert main(["embed", "--checkpoint", str(mnist_checkpoint), "--out", str(out)]) == 0
    import numpy as np

    feats, labels = np.load(out), np.load(out.with_suffix(".labels.npy"))
    assert feats.shape == (1000, 128) and labels.shape == (1000,) and set(labels.tolist()) == set(range(10))


def test_finetune_then_distill_commands(mnist_checkpoint, tmp_path, capsys):
    ft = tmp_path / "ft"
    assert main(["finetune", "--checkpoint", str(mnist_checkpoint), "--label-fraction", "0.01", "--epochs", "1",
                 "--out", str(ft)]) == 0
    saved = json.loads((ft / "labeled-indices.json").read_text())
    assert saved["fraction"] == 0.01 and len(saved["indices"]) == 40
    assert main(["distill", "--teacher", str(ft / "classifier.pt"), "--epochs", "1", "--out", str(tmp_path / "st")]) == 0
    printed = capsys.readouterr().out
    assert "fine-tuned on 40 labels" in printed and "distilled small_cnn teacher into small_cnn" in printed
    assert (tmp_path / "st" / "classifier.pt").exists()


@pytest.mark.parametrize("argv,message", [
    (["knn", "--checkpoint", "/no/such.pt"], "/no/such.pt does not exist"),
    (["linear", "--checkpoint", "CKPT", "--label-fraction", "0"], "label fraction must be in (0, 1]"),
    (["linear", "--checkpoint", "CKPT", "--label-fraction", "1.5"], "label fraction must be in (0, 1]"),
    (["distill", "--teacher", "CKPT"], "is not a classifier"),
])
def test_commands_fail_with_one_line(argv, message, mnist_checkpoint, capsys):
    argv = [str(mnist_checkpoint) if a == "CKPT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_checkpoint_of_other_channels_is_refused(mnist_checkpoint, tmp_path, capsys):
    from PIL import Image

    for split in ("train", "test"):
        for c in ("a", "b"):
            d = tmp_path / "rgb" / split / c
            d.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (28, 28), (i * 40, 10, 200)).save(d / f"{i}.png")
    assert main(["knn", "--checkpoint", str(mnist_checkpoint), "--data", f"folder:{tmp_path / 'rgb'}"]) == 2
    assert "1-channel" in capsys.readouterr().err


def test_supervised_command_trains_the_default_backbone_and_saves_it(tmp_path, capsys):
    out = tmp_path / "sup"
    assert main(["supervised", "--label-fraction", "0.01", "--epochs", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "supervised small_cnn from random init on 40 labels" in printed
    from contrastive.evaluate.classifier import load_classifier

    model, meta = load_classifier(out / "classifier.pt")
    assert meta["backbone"] == "small_cnn" and len(meta["indices"]) == 40
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
