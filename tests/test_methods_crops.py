"""Multi-crop views (contrastive/methods/crops.py) and their way through both augmentation paths."""

from __future__ import annotations

import pytest
import torch

from contrastive.methods import dino
from contrastive.methods.crops import by_size
from helpers import TINY_OPTIONS, make_splits


def test_by_size_runs_each_size_once_and_keeps_the_order():
    calls = []

    def fn(x):
        calls.append(x.shape[0])
        return x.flatten(1).sum(dim=1, keepdim=True)

    views = [torch.full((2, 1, 4, 4), float(i)) for i in range(2)] + [torch.full((2, 1, 2, 2), float(i)) for i in
                                                                      range(2, 5)]
    out = by_size(fn, views)
    assert calls == [4, 6] and [float(o[0]) for o in out] == [0.0, 16.0, 8.0, 12.0, 16.0]


@pytest.mark.parametrize("augment, local_crops", [("batch", None), ("per-image", None), ("batch", 2)])
def test_multicrop_views_reach_the_method_in_both_augmentation_paths(tmp_path, augment, local_crops):
    from contrastive.config import KnnConfig, PretrainConfig
    from contrastive.train import pretrain

    seen = []
    original = dino.DINO.forward

    def spy(self, views):
        seen.append([tuple(v.shape[-2:]) for v in views])
        return original(self, views)

    dino.DINO.forward = spy
    try:
        cfg = PretrainConfig(method="dino", backbone="small_cnn", epochs=1, batch_size=32, lr=0.01,
                             out=str(tmp_path / "run"), method_options=dict(TINY_OPTIONS["dino"]),
                             data_options={"views": "paper", "augment": augment, "local_crops": local_crops},
                             knn=KnnConfig(k=10, every=0))
        result = pretrain(cfg, data=make_splits(), log=lambda *_: None)
    finally:
        dino.DINO.forward = original
    local = 6 if local_crops is None else local_crops  # 2 global + 6 local crops by default
    assert seen and all(shapes == [(16, 16)] * 2 + [(8, 8)] * local for shapes in seen)
    assert result.config.data_options.local_crops == local  # the resolved count is saved with the run
