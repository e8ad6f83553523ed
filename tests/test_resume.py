"""Reliability: runs killed with SIGKILL (mid-epoch, or while saving) resume to the exact
weights of an uninterrupted run; non-finite losses stop or are skipped; a checkpoint of
another network is refused."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from contrastive.checkpoint import list_checkpoints, load_checkpoint
from contrastive.errors import ContrastiveError
from contrastive.train import pretrain
from helpers import tiny_config

DRIVER = Path(__file__).parent / "fault_driver.py"
STEPS_PER_EPOCH = 64 // 16  # tiny_data: 64 training images, batch 16


def drive(out, method, epochs, *flags) -> int:
    done = subprocess.run([sys.executable, str(DRIVER), str(out), method, str(epochs), *flags],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, -signal.SIGKILL), done.stderr[-2000:]
    return done.returncode


def final_weights(run_dir: Path) -> dict:
    return load_checkpoint(list_checkpoints(run_dir)[0])["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
@pytest.mark.parametrize("method", ["simclr", "moco", "byol"])
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path, method):
    epochs = 2
    drive(tmp_path / "straight", method, epochs)
    # Killed right after step 6 (of 8): inside epoch 2, with a mid-epoch checkpoint at step 6 or 5 on disk.
    assert drive(tmp_path / "killed", method, epochs, "--kill-at-step", "6") == -signal.SIGKILL
    newest = list_checkpoints(tmp_path / "killed")[0]
    ckpt = load_checkpoint(newest)
    assert ckpt["epoch"] == 1 and 0 < ckpt["batch"] < STEPS_PER_EPOCH, newest.name
    assert drive(tmp_path / "killed", method, epochs, "--resume") == 0
    resumed, straight = load_checkpoint(list_checkpoints(tmp_path / "killed")[0]), load_checkpoint(
        list_checkpoints(tmp_path / "straight")[0])
    assert resumed["step"] == straight["step"] == epochs * STEPS_PER_EPOCH
    assert_same_weights(straight["model"], resumed["model"])
    if method == "moco":  # the queue and its pointer are part of the weights compared above
        assert int(resumed["model"]["queue_ptr"]) == int(straight["model"]["queue_ptr"])
    if method == "byol":
        assert float(resumed["model"]["tau"]) == float(straight["model"]["tau"]) > 0.996


@pytest.mark.slow
def test_sigkill_mid_epoch_resume_is_exact_on_the_per_image_loader_path(tmp_path):
    drive(tmp_path / "straight", "simclr", 2, "--per-image")
    assert drive(tmp_path / "killed", "simclr", 2, "--per-image", "--kill-at-step", "3") == -signal.SIGKILL
    assert load_checkpoint(list_checkpoints(tmp_path / "killed")[0])["batch"] in (2, 3)
    drive(tmp_path / "killed", "simclr", 2, "--per-image", "--resume")
    assert_same_weights(final_weights(tmp_path / "straight"), final_weights(tmp_path / "killed"))


@pytest.mark.slow
def test_sigkill_while_saving_keeps_the_previous_checkpoint_and_resume_is_exact(tmp_path):
    drive(tmp_path / "straight", "moco", 2)
    # The 4th write is killed between the temporary file and the rename.
    assert drive(tmp_path / "killed", "moco", 2, "--kill-in-save", "4") == -signal.SIGKILL
    run = tmp_path / "killed"
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(run)] == [3, 2]
    assert list(run.glob(".checkpoint-*.tmp-*")), "the half-done write is left as a temporary file"
    drive(run, "moco", 2, "--resume")
    assert_same_weights(final_weights(tmp_path / "straight"), final_weights(run))


def tiny_cfg(tmp_path, method="simclr", **kw):
    return tiny_config(kw.pop("out", tmp_path / "run"), method, knn_every=0, **kw)


def poison_steps(monkeypatch, bad_steps: set[int]):
    """Make the method's loss NaN on the given (0-based) calls."""
    from contrastive.methods import SimCLR

    real, calls = SimCLR.forward, [0]

    def forward(self, views):
        loss, extra = real(self, views)
        calls[0] += 1
        return (loss * float("nan") if calls[0] - 1 in bad_steps else loss), extra

    monkeypatch.setattr(SimCLR, "forward", forward)


def test_nonfinite_loss_stops_with_the_step_and_keeps_the_checkpoint(tmp_path, tiny_data, monkeypatch):
    poison_steps(monkeypatch, {5})
    with pytest.raises(ContrastiveError) as err:
        pretrain(tiny_cfg(tmp_path), data=tiny_data, log=lambda *_: None)
    message = str(err.value)
    assert "loss became nan at step 5 (epoch 2)" in message and "--skip-nonfinite" in message and "--lr" in message
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["checkpoint-epoch0001.pt"]


def test_skip_nonfinite_skips_and_counts(tmp_path, tiny_data, monkeypatch):
    poison_steps(monkeypatch, {2, 5})
    lines = []
    result = pretrain(tiny_cfg(tmp_path, skip_nonfinite=True), data=tiny_data, log=lines.append)
    assert result.skipped_steps == 2 and result.steps == 2 * STEPS_PER_EPOCH
    assert sum("skipped step" in line for line in lines) == 2
    assert all(torch.isfinite(v).all() for v in result.model.state_dict().values() if v.is_floating_point())
    assert load_checkpoint(list_checkpoints(result.run_dir)[0])["history"]["skipped_steps"] == 2


def test_skip_nonfinite_gives_up_when_every_step_is_bad(tmp_path, tiny_data, monkeypatch):
    poison_steps(monkeypatch, set(range(100)))
    with pytest.raises(ContrastiveError, match="steps in a row with --skip-nonfinite"):
        pretrain(tiny_cfg(tmp_path, epochs=6, skip_nonfinite=True), data=tiny_data, log=lambda *_: None)


@pytest.mark.parametrize("change, message", [
    (dict(backbone="resnet18"), "trained with backbone 'small_cnn', not 'resnet18'; pass --backbone small_cnn"),
    (dict(method_options=dict(proj_dim=64)), "trained with proj_dim '128', not '64'; pass --proj-dim 128"),
])
def test_resume_refuses_a_checkpoint_of_another_network(tmp_path, tiny_data, change, message):
    pretrain(tiny_cfg(tmp_path, epochs=1), data=tiny_data, log=lambda *_: None)
    with pytest.raises(ContrastiveError, match=message.replace("(", r"\(")):
        pretrain(tiny_cfg(tmp_path, epochs=2, resume=True, **change), data=tiny_data, log=lambda *_: None)


def test_unwritable_output_folder_is_a_clear_error(tmp_path, tiny_data):
    # A path under a regular file cannot be created, even by root (chmod would not stop root).
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(ContrastiveError, match="cannot write to run folder .*not-a-folder/run .*choose another --out"):
        pretrain(tiny_cfg(tmp_path, out=str(blocker / "run")), data=tiny_data, log=lambda *_: None)
