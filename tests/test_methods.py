"""Every method through the methods registry (contrastive/methods/__init__.py): built from its file's
parts and defaults, options resolved once, a few steps on a fixed batch, one epoch of pretraining
whose checkpoint's encoder loads; and a new method is one file and one registry line."""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import ClassVar

import pytest
import torch

from contrastive.batches import ViewSpec
from contrastive.config import PretrainConfig
from contrastive.errors import ContrastiveError
from contrastive.fields import opt
from contrastive.image import IMAGE
from contrastive.methods import METHODS, OPTIMIZERS, MethodOptions, MoCo, build_method, resolve_options, view_spec
from contrastive.train import pretrain
from helpers import (BATCH, PAIRED_METHODS, TINY_OPTIONS, fixed_views, image_views, make_splits, parse, quiet,
                     small_method, tiny_encoder, train_steps)


@pytest.mark.parametrize("name", ["simclr", "moco", "byol"])
def test_loss_finite_and_falling_on_a_fixed_batch(name):
    model = small_method(name)
    losses = train_steps(model, fixed_views(), 25)
    assert all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 0.05, (name, losses)


@pytest.mark.parametrize("name,target", [("moco", ("key_encoder", "key_projector")),
                                         ("byol", ("target_encoder", "target_projector"))])
def test_target_gets_no_gradient_and_moves_by_ema(name, target):
    model = small_method(name)
    online = {t: copy.deepcopy(getattr(model, t.replace("key_", "").replace("target_", ""))) for t in target}
    before = {t: copy.deepcopy(getattr(model, t)) for t in target}
    trainable = copy.deepcopy(model)
    views = fixed_views()
    loss, _ = model(views)
    loss.backward()
    for t in target:
        assert not any(p.requires_grad for p in getattr(model, t).parameters())
    # Frozen or not, the target is outside the loss's graph: with its weights made trainable (in a
    # copy), the loss still has no gradient for them.
    target_params = [p.requires_grad_(True) for t in target for p in getattr(trainable, t).parameters()]
    trainable_loss, _ = trainable(views)
    assert all(g is None for g in torch.autograd.grad(trainable_loss, target_params, allow_unused=True))
    # An optimizer over every parameter, frozen ones included, leaves the target as it was.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.step()
    for t in target:
        assert all(torch.equal(a, b) for a, b in zip(getattr(model, t).parameters(), before[t].parameters()))
    model.update_target(0.0)
    m = model.options.ema if name == "moco" else 0.9  # BYOL at progress 0: tau = base
    for t in target:
        new_online = getattr(model, t.replace("key_", "").replace("target_", ""))
        for p_t, p_before, p_online in zip(getattr(model, t).parameters(), before[t].parameters(),
                                          new_online.parameters()):
            torch.testing.assert_close(p_t, m * p_before + (1 - m) * p_online)
        # and the online network really changed, so the check above is not vacuous
        assert any(not torch.equal(a, b) for a, b in zip(online[t].parameters(), new_online.parameters()))


def test_build_method_passes_the_batch_norm_and_gather_settings():
    from contrastive.config import PretrainConfig
    from contrastive.methods import build_method
    from contrastive.norm import SplitBatchNorm2d
    from helpers import make_splits

    def split_layers(module):
        return [m.splits for m in module.modules() if isinstance(m, SplitBatchNorm2d)]

    data = make_splits()
    moco_cfg = PretrainConfig(method="moco", batch_size=32, method_options={"shuffle_bn": False}).resolve(data)
    assert moco_cfg.method_options.bn_splits == 8  # MoCo's default on one process (its Options.finish())
    model = build_method("moco", moco_cfg.method_options, *tiny_encoder())
    assert model.bn_splits == 8 and not model.options.shuffle_bn
    assert split_layers(model.encoder) == [8] * 4 and split_layers(model.key_encoder) == [8] * 4
    one = build_method("moco", dataclasses.replace(moco_cfg.method_options, bn_splits=1), *tiny_encoder())
    assert split_layers(one.encoder) == [] and one.options.shuffle_bn is False
    two_ranks = PretrainConfig(method="moco", batch_size=32).resolve(data, world_size=2)
    assert two_ranks.method_options.bn_splits == 1  # under torchrun each rank's BN is already local
    simclr_cfg = PretrainConfig(method="simclr", method_options={"gather": False}).resolve(data)
    assert build_method("simclr", simclr_cfg.method_options, *tiny_encoder()).options.gather is False
    on = dataclasses.replace(simclr_cfg.method_options, gather=True)
    assert build_method("simclr", on, *tiny_encoder()).options.gather is True
    assert MoCo(*tiny_encoder()).bn_splits == 1  # options not finished for a run (bn_splits None): plain BN


def test_method_options_come_from_the_method_file_and_unknown_ones_are_refused():
    from contrastive.config import PretrainConfig
    from contrastive.errors import ContrastiveError
    from helpers import make_splits

    data = make_splits()
    s, m, b = (PretrainConfig(method=name).resolve(data).method_options for name in ("simclr", "moco", "byol"))
    assert (s.temperature, s.proj_dim, s.head_layers) == (0.5, 128, 3)  # SimCLR / SimCLRv2
    assert (m.temperature, m.queue_size, m.ema) == (0.2, 4096, 0.99)  # MoCo v2, CIFAR demo
    assert (b.proj_dim, b.proj_hidden, b.ema) == (256, 4096, 0.996)  # BYOL sec. 3.3
    assert PretrainConfig(method="byol", optimizer="lars").resolve(data).lr == 0.2  # BYOL's LARS base lr
    with pytest.raises(ContrastiveError, match="--queue-size is not an option of simclr"):
        PretrainConfig(method="simclr", method_options={"queue_size": 64}).resolve(data)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_builds_from_its_defaults_and_steps_on_its_own_views(name):
    module = METHODS[name]
    assert set(module.BASE_LR) == set(OPTIMIZERS) and all(lr > 0 for lr in module.BASE_LR.values())
    assert issubclass(module.Options, MethodOptions)
    assert all(f.metadata["help"] for f in dataclasses.fields(module.Options))  # every default says its source
    options = resolve_options(name, {}, local_batch=BATCH)
    assert set(module.SHAPE) <= set(options.to_dict())
    assert isinstance(options.distributed_note(), str)  # the run's log line under torchrun
    spec = view_spec(name, options)
    assert spec.method == name and spec.global_views >= 1
    views = image_views(spec)
    torch.manual_seed(0)
    encoder, feat_dim = IMAGE.build_encoder("small_cnn", {"channels": 1, "cifar_stem": True})
    model = build_method(name, options, encoder, feat_dim)
    assert model.options == options and model.encoder is encoder  # the class holds its Options whole
    loss, metrics = model(views)
    assert loss.dim() == 0 and math.isfinite(loss.item()) and isinstance(metrics, dict)
    assert all(math.isfinite(float(v)) for v in metrics.values())
    loss.backward()
    model.update_target(0.5)


def test_a_method_file_missing_a_part_is_refused_at_registration():
    import types

    from contrastive.methods import check_method, simclr

    broken = types.ModuleType("broken")
    broken.Options, broken.SHAPE, broken.build = simclr.Options, simclr.SHAPE, simclr.build
    broken.BASE_LR = {"sgd": 0.1}  # no LARS or AdamW rate
    with pytest.raises(TypeError, match="BASE_LR"):
        check_method("broken", broken)
    broken.BASE_LR = dict(simclr.BASE_LR)
    assert check_method("broken", broken) is broken


def test_options_are_checked_once_where_they_are_resolved():
    with pytest.raises(ContrastiveError, match="--temperature must be positive, got 0.0"):
        resolve_options("simclr", {"temperature": 0.0})
    with pytest.raises(ContrastiveError, match="--queue-size is not an option of simclr"):
        resolve_options("simclr", {"queue_size": 64})
    given = METHODS["moco"].Options(queue_size=64)
    assert resolve_options("moco", given, local_batch=BATCH) == dataclasses.replace(given, bn_splits=8)
    with pytest.raises(ContrastiveError, match="another method"):
        resolve_options("simclr", given)


# --- a new method is one file and one registry line ----------------------------------------

@dataclasses.dataclass(frozen=True)
class ToyOptions(MethodOptions):
    toy_scale: float = opt(2.0, "how far apart the toy method pushes the two views' embeddings")

    VIEWS: ClassVar[ViewSpec] = ViewSpec("simclr")


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

    from contrastive.methods import METHODS, check_method

    toy = types.ModuleType("toy")
    toy.Options, toy.BASE_LR, toy.SHAPE = ToyOptions, {"sgd": 0.05, "lars": 0.1, "adamw": 1e-3}, ()
    toy.build = lambda options, encoder, feat_dim: ToyMethod(encoder, options.toy_scale)
    monkeypatch.setitem(METHODS, "toy", check_method("toy", toy))  # the one registry line
    assert parse(["pretrain", "--method", "toy", "--toy-scale", "3"]).toy_scale == 3.0
    result = pretrain(PretrainConfig(method="toy", backbone="small_cnn", epochs=1, batch_size=16,
                                     method_options={"toy_scale": 3.0}, out=str(tmp_path / "run")),
                      data=tiny_data, log=quiet)
    assert result.config.lr == 0.05 and result.config.method_options == ToyOptions(toy_scale=3.0)
    assert result.model.scale == 3.0 and result.knn_final is not None
    from contrastive.evaluate.pretrained import load_pretrained

    assert load_pretrained(result.run_dir / "checkpoint-epoch0001.pt").head is None


@pytest.mark.parametrize("name", PAIRED_METHODS)
def test_pretrain_one_epoch_and_the_checkpoint_encoder_loads(tmp_path, name):
    from contrastive.config import KnnConfig, PretrainConfig
    from contrastive.evaluate.pretrained import load_pretrained
    from contrastive.train import pretrain

    cfg = PretrainConfig(method=name, backbone="small_cnn", epochs=1, batch_size=16, lr=0.05, out=str(tmp_path / "run"),
                         method_options=dict(TINY_OPTIONS[name]), knn=KnnConfig(k=10, every=0))
    result = pretrain(cfg, data=make_splits(), log=lambda *_: None)
    assert result.steps == 64 // 16 and result.config.method_options.proj_hidden == 32
    pre = load_pretrained(result.run_dir / "checkpoint-epoch0001.pt")
    assert pre.head is None and pre.record["neck"] is None
    for key, value in result.model.encoder.state_dict().items():
        assert torch.equal(pre.encoder.state_dict()[key], value), key
    x = torch.randn(4, 1, 16, 16)
    torch.testing.assert_close(pre.encoder(x), result.model.encoder.eval()(x))


LOCAL_METHODS = ["dino", "swav", "infomax", "cpc"]


@pytest.mark.parametrize("name", LOCAL_METHODS)
def test_pretrain_one_epoch_with_the_papers_views_and_the_checkpoint_encoder_loads(tmp_path, name):
    from contrastive.config import KnnConfig, PretrainConfig
    from contrastive.evaluate.pretrained import load_pretrained
    from contrastive.train import pretrain

    cfg = PretrainConfig(method=name, backbone="small_cnn", epochs=1, batch_size=16, lr=0.01, out=str(tmp_path / "run"),
                         method_options=dict(TINY_OPTIONS[name]), data_options={"views": "paper"},
                         knn=KnnConfig(k=10, every=0))
    result = pretrain(cfg, data=make_splits(), log=lambda *_: None)
    assert result.steps == 64 // 16
    pre = load_pretrained(result.run_dir / "checkpoint-epoch0001.pt")
    for key, value in result.model.encoder.state_dict().items():
        assert torch.equal(pre.encoder.state_dict()[key], value), key
    if name == "swav":
        assert int(result.model.queued) == 32  # filled during the epoch
