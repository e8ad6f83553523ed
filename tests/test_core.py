"""The core's seams: the loop's callbacks, a config resolved once, flags generated from the
dataclasses (typed flags win over --quick), data flags on every command, the batch producer."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from conftest import make_splits, tiny_config
from contrastive.cli import build_parser, main
from contrastive.commands import pipeline_config
from contrastive.config import KnnConfig, PretrainConfig
from contrastive.evaluate.features import extract_features
from contrastive.image.augment import eval_transform
from contrastive.modality import Reader
from contrastive.train import Callback, pretrain


def quiet(*_):
    pass


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


def test_the_resolved_config_is_frozen_and_is_what_the_run_saved(tmp_path, tiny_data):
    result = pretrain(tiny_config(tmp_path / "run", knn_every=0), data=tiny_data, log=quiet)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.config.epochs = 3
    saved = json.loads((result.run_dir / "config.json").read_text())
    assert saved == json.loads(json.dumps(result.config.to_dict()))
    assert saved["precision"] in ("fp32", "bf16") and saved["out"] == str(tmp_path / "run")
    assert saved["method_options"]["temperature"] == 0.5 and saved["data_options"]["image_size"] == 16
    assert PretrainConfig.from_dict(saved) == result.config


def test_the_default_batch_gives_small_data_enough_steps_an_epoch():
    from contrastive.config import MIN_STEPS_PER_EPOCH, default_batch_size

    assert default_batch_size(50_000) == 256  # CIFAR-10: 195 steps an epoch, the recipes' batch
    assert default_batch_size(3_600) == 64  # the digits' training split: 56 steps, not 14
    assert default_batch_size(10) == 32  # never below 32 (BatchNorm and the in-batch negatives need some)
    for n in (3_600, 7_000, 12_000):  # the largest batch up to 256 with MIN_STEPS_PER_EPOCH steps
        batch = default_batch_size(n)
        assert n // batch >= MIN_STEPS_PER_EPOCH and (batch == 256 or n // (2 * batch) < MIN_STEPS_PER_EPOCH)
    assert default_batch_size(3_600, world_size=3) % 3 == 0


def test_the_batch_resolves_from_the_data_unless_given(tiny_data):
    limited = PretrainConfig(train_limit=40)
    assert PretrainConfig().resolve(tiny_data).batch_size == 32  # 64 training squares
    assert PretrainConfig(batch_size=16).resolve(tiny_data).batch_size == 16
    assert limited.resolve(tiny_data).lr_scaled == pytest.approx(limited.resolve(tiny_data).lr * 32 / 256)


def parse(argv):
    return build_parser().parse_args(argv)


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


def test_every_default_shown_by_help_comes_from_the_dataclasses(capsys):
    with pytest.raises(SystemExit):
        parse(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "simclr: NT-Xent softmax temperature (SimCLR appendix B.9: 0.5 for CIFAR-10) (default: 0.5)" in text
    assert "moco: InfoNCE temperature" in text and "(default: 0.2)" in text
    assert f"(default: {PretrainConfig.epochs})" in text


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


def test_features_of_in_memory_items_go_through_the_tensor_path(monkeypatch):
    import contrastive.batches as batches

    data = make_splits(n_train=40)

    def no_loader(*args, **kwargs):
        raise AssertionError("a DataLoader was built for items held in memory")

    monkeypatch.setattr(batches, "DataLoader", no_loader)
    encoder = torch.nn.Flatten()
    reader = Reader("image", {"channels": 1, "image_size": 16, "cifar_stem": False})
    feats, labels = extract_features(encoder, data.train, reader, batch_size=16)
    by_hand = torch.stack([eval_transform(16, 1)(img).flatten() for img in data.train.images])
    assert torch.equal(feats, by_hand) and torch.equal(labels, data.train.labels)


# --- a new method is one file and one registry line ----------------------------------------

@dataclasses.dataclass(frozen=True)
class ToyOptions:
    from contrastive.fields import opt

    toy_scale: float = opt(2.0, "how far apart the toy method pushes the two views' embeddings")


class ToyMethod(torch.nn.Module):
    """What a method file holds, at its smallest: negative cosine similarity of the two views."""

    def __init__(self, encoder, scale: float):
        super().__init__()
        self.encoder, self.scale = encoder, scale

    def forward(self, views):
        z1, z2 = (torch.nn.functional.normalize(self.encoder(v), dim=1) for v in views)
        return -self.scale * (z1 * z2).sum(1).mean(), {}

    def update_target(self, progress):
        pass

    def classifier_neck(self):
        return None


def test_a_new_method_needs_one_module_and_one_registry_line(tmp_path, tiny_data, monkeypatch, capsys):
    import types

    from contrastive.methods import METHODS

    toy = types.ModuleType("toy")
    toy.Options, toy.BASE_LR, toy.SHAPE, toy.VIEWS = ToyOptions, {"sgd": 0.05, "lars": 0.1, "adamw": 1e-3}, (), "simclr"
    toy.build = lambda options, encoder, feat_dim: ToyMethod(encoder, options.toy_scale)
    monkeypatch.setitem(METHODS, "toy", toy)  # the one registry line
    assert parse(["pretrain", "--method", "toy", "--toy-scale", "3"]).toy_scale == 3.0
    result = pretrain(PretrainConfig(method="toy", backbone="small_cnn", epochs=1, batch_size=16,
                                     method_options={"toy_scale": 3.0}, out=str(tmp_path / "run")),
                      data=tiny_data, log=quiet)
    assert result.config.lr == 0.05 and result.config.method_options == {"toy_scale": 3.0}
    assert result.model.scale == 3.0 and result.knn_final is not None
    from contrastive.evaluate.pretrained import load_pretrained

    assert load_pretrained(result.run_dir / "checkpoint-epoch0001.pt").head is None


def test_supervised_budget_flags_are_not_read_as_pretraining_or_data_options(tmp_path, capsys):
    # --no-augment is the budget's (a bool), not the image option --augment {auto,batch,per-image};
    # --epochs 0 is a valid budget when --min-steps sets the steps.
    assert main(["supervised", "--label-fraction", "0.01", "--epochs", "0", "--min-steps", "2", "--no-augment",
                 "--device", "cpu"]) == 0
    assert "supervised small_cnn_grid from random init on 40 labels" in capsys.readouterr().out
