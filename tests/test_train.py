"""The training loop, checkpoints, resume and the command line, end to end on tiny data."""

import json
import os

import pytest
import torch

from contrastive.checkpoint import latest_good_checkpoint, load_checkpoint, save_atomic
from contrastive.cli import main
from contrastive.errors import ContrastiveError
from contrastive.train import pretrain
from conftest import tiny_config


def tiny_cfg(tmp_path, method="simclr", **kw):
    return tiny_config(kw.pop("out", tmp_path / "run"), method, **kw)


def quiet(*_):
    pass


@pytest.mark.parametrize("method", ["simclr", "moco", "byol"])
def test_pretrain_writes_checkpoints_metrics_and_config(tmp_path, tiny_data, method):
    result = pretrain(tiny_cfg(tmp_path, method), data=tiny_data, log=quiet)
    run = result.run_dir
    assert sorted(p.name for p in run.glob("checkpoint-*.pt")) == ["checkpoint-epoch0001.pt", "checkpoint-epoch0002.pt"]
    ckpt = load_checkpoint(run / "checkpoint-epoch0002.pt")
    assert ckpt["epoch"] == 2 and ckpt["step"] == 2 * (64 // 16)
    assert ckpt["config"]["method"] == method and ckpt["config"]["lr_scaled"] == pytest.approx(0.1 * 16 / 256)
    assert {"optimizer", "scheduler", "rng", "model", "data"} <= set(ckpt)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if "epoch_loss" in r]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert all(0.0 <= r["knn_top1"] <= 1.0 for r in epochs)
    assert records[0]["epoch"] == 0 and "knn_top1" in records[0]  # random-init kNN first
    assert json.loads((run / "config.json").read_text())["method"] == method
    assert result.knn_random_init is not None and result.knn_final == epochs[-1]["knn_top1"]


def test_checkpoint_round_trip_restores_model(tmp_path, tiny_data):
    result = pretrain(tiny_cfg(tmp_path, "moco", epochs=1), data=tiny_data, log=quiet)
    ckpt = load_checkpoint(result.run_dir / "checkpoint-epoch0001.pt")
    for k, v in result.model.state_dict().items():
        torch.testing.assert_close(ckpt["model"][k], v, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["simclr", "moco", "byol"])
def test_resume_from_epoch_checkpoint_gives_identical_weights(tmp_path, tiny_data, method):
    straight = pretrain(tiny_cfg(tmp_path / "a", method, epochs=3), data=tiny_data, log=quiet)
    cfg = tiny_cfg(tmp_path / "b", method, epochs=3)
    pretrain(cfg, data=tiny_data, log=quiet)
    # Simulate a crash during epoch 3: only the epoch-2 checkpoint survives.
    (tmp_path / "b" / "run" / "checkpoint-epoch0003.pt").unlink()
    resumed = pretrain(tiny_cfg(tmp_path / "b", method, epochs=3, resume=True), data=tiny_data, log=quiet)
    assert resumed.steps == straight.steps
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_skips_a_corrupted_newest_checkpoint(tmp_path, tiny_data):
    pretrain(tiny_cfg(tmp_path, epochs=2), data=tiny_data, log=quiet)
    newest = tmp_path / "run" / "checkpoint-epoch0002.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a crash without atomic writes
    with pytest.raises(ContrastiveError, match="checkpoint-epoch0002.pt is truncated or corrupted"):
        load_checkpoint(newest)
    warnings = []
    path, ckpt = latest_good_checkpoint(tmp_path / "run", warn=warnings.append)
    assert path.name == "checkpoint-epoch0001.pt" and ckpt["epoch"] == 1
    assert "epoch0002" in warnings[0]


def test_resume_refuses_a_checkpoint_of_another_method(tmp_path, tiny_data):
    pretrain(tiny_cfg(tmp_path, "simclr", epochs=1), data=tiny_data, log=quiet)
    with pytest.raises(ContrastiveError, match="trained with method 'simclr', not 'byol'"):
        pretrain(tiny_cfg(tmp_path, "byol", epochs=2, resume=True), data=tiny_data, log=quiet)


def test_existing_run_folder_is_never_overwritten(tmp_path, tiny_data):
    pretrain(tiny_cfg(tmp_path, epochs=1), data=tiny_data, log=quiet)
    with pytest.raises(ContrastiveError, match="already holds checkpoints; pass --resume"):
        pretrain(tiny_cfg(tmp_path, epochs=1), data=tiny_data, log=quiet)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "payload": _Evil()}, path)
    with pytest.raises(ContrastiveError, match="refusing to load .*evil.pt"):
        load_checkpoint(path)


def test_atomic_save_leaves_old_file_when_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_atomic({"model": {"w": torch.ones(2)}, "config": {}}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(ContrastiveError, match="No space left on device.*free disk space"):
        save_atomic({"model": {"w": torch.zeros(2)}, "config": {}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary left behind


def test_fewer_images_than_batch_is_a_clear_error(tmp_path, tiny_data):
    with pytest.raises(ContrastiveError, match="fewer than --batch-size 128"):
        pretrain(tiny_cfg(tmp_path, batch_size=128), data=tiny_data, log=quiet)


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


@pytest.mark.parametrize("augment", ["batch", "per-image"])
def test_images_smaller_than_the_crop_are_upsampled(tmp_path, augment, capsys):
    from PIL import Image

    for i in range(8):
        Image.new("RGB", (8, 8), (30 * i, 60, 90)).save(tmp_path / f"img{i}.png")
    out = tmp_path / "run"
    assert main(["pretrain", "--data", f"folder:{tmp_path}", "--image-size", "24", "--backbone", "small_cnn",
                 "--batch-size", "4", "--epochs", "1", "--augment", augment, "--out", str(out)]) == 0
    ckpt = load_checkpoint(out / "checkpoint-epoch0001.pt")
    assert ckpt["encoder"]["inputs"]["image_size"] == 24 and ckpt["step"] == 2



def test_files_beside_the_checkpoints_are_neither_resumed_nor_pruned(tmp_path, tiny_data):
    """An exported checkpoint-epoch0001.ts.pt or a similarity index beside the checkpoints must survive a
    resumed run, which prunes all but the two newest checkpoints."""
    from contrastive.checkpoint import list_checkpoints

    pretrain(tiny_cfg(tmp_path, epochs=1), data=tiny_data, log=quiet)
    kept = [tmp_path / "run" / "checkpoint-epoch0001.ts.pt", tmp_path / "run" / "checkpoint-epoch0001.index.pt"]
    for path in kept:
        path.write_bytes(b"user file")
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["checkpoint-epoch0001.pt"]
    pretrain(tiny_cfg(tmp_path, epochs=3, resume=True), data=tiny_data, log=quiet)
    assert all(p.read_bytes() == b"user file" for p in kept)
