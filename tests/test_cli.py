"""The command line (contrastive/cli/): pretraining and the few-label commands end to end on the
embedded digits, typed flags, data flags on every command, and one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

from contrastive.checkpoint import load_checkpoint
from contrastive.cli import main
from contrastive.cli.pipeline import pipeline_config
from contrastive.config import KnnConfig, PretrainConfig
from contrastive.train import pretrain
from helpers import PAIRED_METHODS, make_splits, parse, quiet


@pytest.mark.slow
def test_cli_pretrain_end_to_end_on_embedded_digits(tmp_path, capsys):
    out = tmp_path / "cli-run"
    code = main(["pretrain", "--method", "simclr", "--epochs", "1", "--batch-size", "64", "--train-limit", "256",
                 "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"run folder: {out}" in printed
    assert "kNN top-1 (k=20): random-init encoder" in printed
    ckpt = load_checkpoint(out / "checkpoint-epoch0001.pt")
    assert ckpt["data"] == {"name": "mnist", "num_classes": 10, "classes": [str(i) for i in range(10)]}
    assert ckpt["encoder"] == {"modality": "image", "backbone": "small_cnn_grid", "feat_dim": 512, "neck": {
        "prefix": "projector.", "keep": 1, "mlp": {"in_dim": 512, "hidden_dim": 512, "out_dim": 128, "num_layers": 3,
                                                   "batch_norm": True, "last_bn": True}},
        "inputs": {"channels": 1, "image_size": 28, "cifar_stem": True}}


@pytest.mark.parametrize("argv,message", [
    (["pretrain", "--data", "folder:/no/such/dir"], "/no/such/dir"),
    (["pretrain", "--backbone", "vgg99", "--max-steps", "1"], "unknown backbone 'vgg99'"),
    (["pretrain", "--epochs", "0"], "--epochs must be at least 1"),
    (["pretrain", "--method", "moco", "--bn-splits", "3"], "--bn-splits 3 must be at least 1 and divide"),
    (["pretrain", "--train-limit", "100", "--batch-size", "256"], "100 images, fewer than --batch-size 256; lower --batch-size"),
    (["pretrain", "--data", "folder:EMPTY"], "EMPTY"),
])
def test_cli_user_errors_are_one_line(argv, message, capsys, tmp_path):
    (tmp_path / "EMPTY").mkdir()
    argv = [a.replace("EMPTY", str(tmp_path / "EMPTY")) for a in argv]
    message = message.replace("EMPTY", str(tmp_path / "EMPTY"))
    assert main(argv + ["--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_cli_unknown_method_is_rejected(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--method", "deepcluster"])
    assert exc.value.code == 2
    assert "invalid choice: 'deepcluster'" in capsys.readouterr().err


def test_typed_flags_win_over_quick_and_the_baseline_follows_finetuning():
    cfg = pipeline_config(parse(["pipeline", "--quick", "--epochs", "3", "--train-limit", "500",
                                 "--finetune-epochs", "4", "--queue-size", "128", "--method", "moco"]))
    assert (cfg.pretrain.epochs, cfg.pretrain.train_limit) == (3, 500)  # typed: win over the preset's 2 / 1000
    assert cfg.finetune.epochs == 4 and cfg.supervised.epochs == 4  # the baseline gets the same steps
    assert cfg.finetune.min_steps == 40 and cfg.distill.epochs == 1 and cfg.tsne is False  # untouched: the preset
    assert cfg.pretrain.method_options == {"queue_size": 128}
    plain = pipeline_config(parse(["pipeline"]))
    assert plain.pretrain.epochs == 30 and plain.pretrain.knn.every == 5 != KnnConfig().every  # the pipeline's
    assert plain.finetune.lr == 0.03 and plain.supervised.lr == 0.1 and plain.finetune.min_steps == 100


def test_the_data_sets_its_pipeline_defaults_under_the_typed_flags():
    code = pipeline_config(parse(["pipeline", "--data", "juliet:/nowhere"]))
    assert code.finetune.min_steps == code.supervised.min_steps == 300  # the code modality's pipeline_defaults
    assert code.finetune.lr == 0.03 and code.distill.epochs == 3  # the rest: PipelineConfig's
    typed = pipeline_config(parse(["pipeline", "--data", "juliet:/nowhere", "--finetune-min-steps", "50"]))
    assert typed.finetune.min_steps == typed.supervised.min_steps == 50  # typed wins, the baseline follows
    quick = pipeline_config(parse(["pipeline", "--data", "juliet:/nowhere", "--quick"]))
    assert quick.finetune.min_steps == 40  # --quick keeps its preset
    assert pipeline_config(parse(["pipeline", "--data", "folder:/nowhere"])).finetune.min_steps == 100  # images


@pytest.mark.parametrize("command", [
    ["pretrain"], ["pipeline"], ["knn", "--checkpoint", "x"], ["linear", "--checkpoint", "x"],
    ["finetune", "--checkpoint", "x", "--label-fraction", "0.1"], ["supervised", "--label-fraction", "0.1"],
    ["distill", "--teacher", "x"], ["embed", "--checkpoint", "x", "--out", "y"],
])
def test_every_command_that_reads_data_takes_skip_bad_images(command):
    args = parse(command + ["--skip-bad-images"])
    assert args.skip_bad_images is True


def test_skip_bad_images_on_the_command_line_leaves_the_file_out(tmp_path, capsys):
    from PIL import Image

    for i in range(8):
        Image.new("RGB", (8, 8), (30 * i, 60, 90)).save(tmp_path / f"img{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    argv = ["pretrain", "--data", f"folder:{tmp_path}", "--backbone", "small_cnn", "--batch-size", "4", "--epochs", "1"]
    assert main(argv + ["--out", str(tmp_path / "a")]) == 2
    assert "--skip-bad-images" in capsys.readouterr().err
    assert main(argv + ["--skip-bad-images", "--out", str(tmp_path / "b")]) == 0


def test_unknown_method_option_on_the_command_line_is_one_line(capsys, tmp_path):
    assert main(["pretrain", "--queue-size", "64", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --queue-size is not an option of simclr") and "\n" not in err


def test_supervised_budget_flags_are_not_read_as_pretraining_or_data_options(tmp_path, capsys):
    # --no-augment is the budget's (a bool), not the image option --augment {auto,batch,per-image};
    # --epochs 0 is a valid budget when --min-steps sets the steps.
    assert main(["supervised", "--label-fraction", "0.01", "--epochs", "0", "--min-steps", "2", "--no-augment",
                 "--device", "cpu"]) == 0
    assert "supervised small_cnn_grid from random init on 40 labels" in capsys.readouterr().out


def test_command_line_lists_and_parses_the_new_methods_options(capsys):
    from contrastive.cli import build_parser
    from contrastive.commands import pretrain_config
    from contrastive.config import PretrainConfig
    from contrastive.errors import ContrastiveError

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in PAIRED_METHODS:
        assert name in text
    assert "barlow_twins: lambda, the weight of the redundancy reduction (off-diagonal) term" in text
    assert "mocov3: softmax temperature T (official code: 1.0 for ResNets; 0.2 for ViTs) (default: 1.0)" in text
    assert "vicreg: nu, the weight of the covariance term (VICReg implementation details: 1) (default: 1.0)" in text
    args = parser.parse_args(["pretrain", "--method", "barlow_twins", "--redundancy-weight", "0.01", "--proj-dim", "64",
                              "--no-gather"])
    assert pretrain_config(args) == {"method": "barlow_twins",
                                     "method_options": {"gather": False, "proj_dim": 64, "redundancy_weight": 0.01}}
    args = parser.parse_args(["pretrain", "--method", "vicreg", "--sim-weight", "5", "--cov-weight", "2"])
    assert pretrain_config(args)["method_options"] == {"cov_weight": 2.0, "sim_weight": 5.0}
    with pytest.raises(ContrastiveError, match="--temperature is not an option of simsiam"):
        PretrainConfig(method="simsiam", method_options={"temperature": 0.5}).resolve(make_splits())


@pytest.fixture(scope="module")
def mnist_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "run"
    pretrain(PretrainConfig(method="simclr", epochs=1, batch_size=64, train_limit=256, out=str(out)), log=quiet)
    return out / "checkpoint-epoch0001.pt"


@pytest.mark.slow
def test_knn_linear_embed_commands(mnist_checkpoint, tmp_path, capsys):
    assert main(["knn", "--checkpoint", str(mnist_checkpoint)]) == 0
    assert "kNN top-1 (k=20, T=0.1) on mnist test:" in capsys.readouterr().out
    assert main(["linear", "--checkpoint", str(mnist_checkpoint), "--label-fraction", "0.05"]) == 0
    assert "frozen encoder unchanged" in capsys.readouterr().out
    out = tmp_path / "emb" / "test.npy"
    assert main(["embed", "--checkpoint", str(mnist_checkpoint), "--out", str(out)]) == 0
    import numpy as np

    feats, labels = np.load(out), np.load(out.with_suffix(".labels.npy"))
    assert feats.shape == (1000, 512) and labels.shape == (1000,) and set(labels.tolist()) == set(range(10))


@pytest.mark.slow
def test_finetune_then_distill_commands(mnist_checkpoint, tmp_path, capsys):
    ft = tmp_path / "ft"
    assert main(["finetune", "--checkpoint", str(mnist_checkpoint), "--label-fraction", "0.01", "--epochs", "1",
                 "--out", str(ft)]) == 0
    saved = json.loads((ft / "labeled-indices.json").read_text())
    assert saved["fraction"] == 0.01 and len(saved["indices"]) == 40
    assert main(["distill", "--teacher", str(ft / "classifier.pt"), "--epochs", "1", "--out", str(tmp_path / "st")]) == 0
    printed = capsys.readouterr().out
    assert "fine-tuned on 40 labels" in printed and "distilled small_cnn_grid teacher into small_cnn_grid" in printed
    assert (tmp_path / "st" / "classifier.pt").exists()


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_supervised_command_trains_the_default_backbone_and_saves_it(tmp_path, capsys):
    out = tmp_path / "sup"
    assert main(["supervised", "--label-fraction", "0.01", "--epochs", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "supervised small_cnn_grid from random init on 40 labels" in printed
    from contrastive.evaluate.classifier import load_classifier

    model, meta = load_classifier(out / "classifier.pt")
    assert meta["backbone"] == "small_cnn_grid" and len(meta["indices"]) == 40
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
