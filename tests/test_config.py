"""The run's config (contrastive/config.py): resolved once, frozen, saved; the batch from the data."""

from __future__ import annotations

import dataclasses
import json

import pytest

from contrastive.config import KnnConfig, PretrainConfig
from contrastive.image import IMAGE
from contrastive.methods import METHODS
from contrastive.train import pretrain
from helpers import make_splits, quiet, tiny_config


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


# --- the run config --------------------------------------------------------------------------------

def test_the_resolved_config_holds_options_and_files_hold_plain_dicts():
    given = PretrainConfig(method="moco", batch_size=16, method_options={"queue_size": 64},
                           data_options={"views": "paper"}, knn=KnnConfig(every=0))
    cfg = given.resolve(make_splits())
    assert cfg.method_options == METHODS["moco"].Options(queue_size=64, bn_splits=8)
    assert isinstance(cfg.data_options, IMAGE.Options) and cfg.data_options.views == "paper"
    saved = json.loads(json.dumps(cfg.to_dict()))  # what config.json and every checkpoint hold
    assert saved["method_options"]["queue_size"] == 64 and saved["data_options"]["image_size"] == 16
    assert PretrainConfig.from_dict(saved) == cfg
    saved["method_options"]["an_option_since_removed"] = 1  # a file written by another version
    assert PretrainConfig.from_dict(saved) == cfg
    assert PretrainConfig.from_dict(given.to_dict()) == given  # a config not yet resolved keeps what was typed
