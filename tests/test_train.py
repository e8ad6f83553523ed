"""The training loop (contrastive/train.py) end to end on tiny data: checkpoints, metrics, resume,
callbacks and the kNN monitor."""

from __future__ import annotations

import json

import pytest
import torch

from contrastive.checkpoint import latest_good_checkpoint, load_checkpoint
from contrastive.cli import main
from contrastive.errors import ContrastiveError
from contrastive.train import Callback, pretrain
from helpers import quiet, tiny_config


def tiny_cfg(tmp_path, method="simclr", **kw):
    return tiny_config(kw.pop("out", tmp_path / "run"), method, **kw)


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


def test_fewer_images_than_batch_is_a_clear_error(tmp_path, tiny_data):
    with pytest.raises(ContrastiveError, match="fewer than --batch-size 128"):
        pretrain(tiny_cfg(tmp_path, batch_size=128), data=tiny_data, log=quiet)


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


class Recorder(Callback):
    def __init__(self):
        self.events, self.batches = [], 0

    def on_start(self, run):
        self.events.append(("start", run.resumed))

    def wrap_batches(self, run, epoch, batches):
        for item in batches:
            self.batches += 1
            yield item

    def on_step(self, run, loss, finite):
        self.events.append(("step", run.step, finite))

    def on_epoch_end(self, run, epoch, record):
        record["seen_by_callback"] = epoch + 1
        self.events.append(("epoch", epoch))

    def on_end(self, run):
        self.events.append(("end", run.step))


def test_callbacks_see_every_step_and_epoch_and_may_add_to_the_epoch_record(tmp_path, tiny_data):
    recorder = Recorder()
    result = pretrain(tiny_config(tmp_path / "run", knn_every=0), data=tiny_data, log=quiet, callbacks=[recorder])
    steps = [e for e in recorder.events if e[0] == "step"]
    assert recorder.events[0] == ("start", False) and recorder.events[-1] == ("end", result.steps) == ("end", 8)
    assert [s[1] for s in steps] == list(range(1, 9)) and all(s[2] for s in steps)
    assert [e[1] for e in recorder.events if e[0] == "epoch"] == [0, 1]
    assert recorder.batches == 8
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["seen_by_callback"] for r in records if "epoch_loss" in r] == [1, 2]


def test_knn_every_zero_turns_the_monitor_off(tmp_path, tiny_data):
    result = pretrain(tiny_config(tmp_path / "run", knn_every=0), data=tiny_data, log=quiet)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert result.knn_random_init is None and result.knn_final is None
    assert not any("knn_top1" in r for r in records)
    every_two = pretrain(tiny_config(tmp_path / "b", knn_every=2, epochs=3), data=tiny_data, log=quiet)
    knn = json.loads((every_two.run_dir / "config.json").read_text())["knn"]
    assert knn["every"] == 2
    assert every_two.knn_final is not None  # the last epoch (3) is measured at the end though 3 % 2 != 0


# --- the epoch's order: random batches, or whole families (--batch-groups, issue 24) ----------------

def family_groups(sizes=(5, 1, 7, 3, 4, 2, 6, 4)) -> list[str]:
    """Families of uneven sizes, their items interleaved in storage (as a dataset read file by file may be)."""
    owners = [f"fam{f}" for f, size in enumerate(sizes) for _ in range(size)]
    return [owners[i] for i in torch.randperm(len(owners), generator=torch.Generator().manual_seed(9))]


def as_ranks(monkeypatch, world: int, rank: int) -> None:
    from contrastive import distributed

    monkeypatch.setattr(distributed, "world_size", lambda: world)
    monkeypatch.setattr(distributed, "rank", lambda: rank)


def test_grouped_epoch_holds_every_item_once_with_each_family_contiguous(tmp_path):
    from contrastive.train import epoch_indices

    groups = family_groups()
    cfg = tiny_cfg(tmp_path, batch_size=8, batch_groups=True)
    orders = [epoch_indices(len(groups), cfg, epoch, groups) for epoch in range(3)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(len(groups)))
        runs = [groups[i] for i in order.tolist()]
        starts = [name for k, name in enumerate(runs) if k == 0 or runs[k - 1] != name]
        assert sorted(starts) == sorted(set(groups))  # each family starts once: one contiguous run
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])
    families = lambda order: [groups[i] for i in order.tolist()]  # noqa: E731
    assert families(orders[0]) != families(orders[1])  # the families themselves move, not only their insides
    assert torch.equal(orders[1], epoch_indices(len(groups), cfg, 1, groups))  # (seed, epoch) fixes it


def test_grouped_epoch_gives_two_ranks_disjoint_equal_shares_of_whole_local_batches(tmp_path, monkeypatch):
    from contrastive.grouped import grouped_order
    from contrastive.train import epoch_indices, epoch_seed

    groups = family_groups()  # 32 items; global batch 8: 4 per rank
    cfg = tiny_cfg(tmp_path, batch_size=8, batch_groups=True)
    shares = []
    for rank in (0, 1):
        as_ranks(monkeypatch, 2, rank)
        shares.append(epoch_indices(len(groups), cfg, 0, groups))
    assert len(shares[0]) == len(shares[1]) == len(groups) // 2
    assert not set(shares[0].tolist()) & set(shares[1].tolist())
    order = grouped_order(groups, torch.Generator().manual_seed(epoch_seed(cfg, 0)))
    for rank, share in enumerate(shares):  # rank r's b-th batch: the r-th half of global batch b
        for b in range(len(share) // 4):
            assert torch.equal(share[4 * b:4 * b + 4], order[8 * b + 4 * rank:8 * b + 4 * rank + 4])


def test_random_batches_are_unchanged_without_the_flag(tmp_path, monkeypatch, tiny_data):
    from contrastive.train import batch_groups, epoch_indices, epoch_seed

    cfg = tiny_cfg(tmp_path, seed=3)
    assert cfg.batch_groups is None and not cfg.resolve(tiny_data).batch_groups  # images: no families, off
    assert batch_groups(cfg, tiny_data, tiny_data.train) is None
    for epoch in (0, 1):  # DistributedSampler's order at world size 1: randperm seeded by seed + epoch
        expected = torch.randperm(64, generator=torch.Generator().manual_seed(epoch_seed(cfg, 0) + epoch))
        assert torch.equal(epoch_indices(64, cfg, epoch), expected)
    shares = []
    for rank in (0, 1):
        as_ranks(monkeypatch, 2, rank)
        shares.append(set(epoch_indices(63, cfg, 0).tolist()))
    assert len(shares[0]) == len(shares[1]) == 31 and not shares[0] & shares[1]


def test_batch_groups_is_refused_for_data_without_families(tmp_path, tiny_data):
    with pytest.raises(ContrastiveError, match="--batch-groups needs items that come in families, and image data"):
        pretrain(tiny_cfg(tmp_path, batch_groups=True, knn_every=0), data=tiny_data, log=quiet)
