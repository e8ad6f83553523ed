"""Heads, momentum, optimizers and schedules, the kNN classifier, backbones."""


import pytest
import torch
from torch import nn

from contrastive.errors import ContrastiveError
from contrastive.evaluate.features import output_width
from contrastive.evaluate.knn import knn_accuracy, knn_predict
from contrastive.heads import byol_mlp, moco_head, simclr_head
from contrastive.image.backbones import build_backbone
from contrastive.image.data import ImageSet
from contrastive.modality import Reader
from contrastive.momentum import cosine_ema, ema_update, frozen_copy
from contrastive.optim import LARS, build_optimizer, param_groups, warmup_cosine


def test_simclr_v2_head_is_three_layers_with_bn_and_cuts_after_first():
    head = simclr_head(32, 32, 8, num_layers=3)
    assert len(head) == 3
    assert sum(isinstance(m, nn.BatchNorm1d) for m in head.modules()) == 3
    assert head[:1](torch.randn(4, 32)).shape == (4, 32)  # SimCLRv2 fine-tunes from here
    assert head(torch.randn(4, 32)).shape == (4, 8)


def test_moco_head_has_no_bn_and_byol_has_bn():
    assert not any(isinstance(m, nn.BatchNorm1d) for m in moco_head(16, 16).modules())
    byol = byol_mlp(16, 64, 8)
    assert [type(m) for m in byol[0]] == [nn.Linear, nn.BatchNorm1d, nn.ReLU]
    assert byol(torch.randn(4, 16)).shape == (4, 8)


def test_ema_update_formula_and_frozen_copy():
    online = nn.Linear(3, 2)
    target = frozen_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    with torch.no_grad():
        online.weight.add_(1.0)
    ema_update(target, online, 0.75)
    torch.testing.assert_close(target.weight, 0.75 * (online.weight - 1.0) + 0.25 * online.weight)


def test_cosine_ema_endpoints_and_monotone():
    assert cosine_ema(0.996, 0.0) == pytest.approx(0.996)
    assert cosine_ema(0.996, 1.0) == pytest.approx(1.0)
    vals = [cosine_ema(0.99, k / 10) for k in range(11)]
    assert all(a <= b for a, b in zip(vals, vals[1:]))


def test_no_weight_decay_on_bn_and_bias():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {p.ndim for p in decay["params"]} == {2, 4}
    assert len(no_decay["params"]) == 4  # BN weight, BN bias, conv bias, linear bias


def test_warmup_cosine_shape():
    total, warm = 100, 10
    assert warmup_cosine(0, total, warm) == pytest.approx(0.1)
    assert warmup_cosine(9, total, warm) == pytest.approx(1.0)
    assert warmup_cosine(10, total, warm) == pytest.approx(1.0)
    assert warmup_cosine(55, total, warm) == pytest.approx(0.5)
    assert warmup_cosine(100, total, warm) == pytest.approx(0.0, abs=1e-12)


def test_lars_trust_ratio_step():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))  # |w| = 5
    w.grad = torch.tensor([0.0, 2.0])  # |g| = 2, no weight decay
    opt = LARS([{"params": [w], "weight_decay": 0.0}], lr=1.0, momentum=0.0, eta=0.1)
    opt.step()
    # trust = 0.1 * 5 / 2 = 0.25 -> step = 0.25 * g
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 3.5]))
    b = nn.Parameter(torch.tensor([1.0]))
    b.grad = torch.tensor([2.0])
    opt = LARS([{"params": [b], "weight_decay": 0.0, "lars_exclude": True}], lr=0.5, momentum=0.0)
    opt.step()
    torch.testing.assert_close(b.detach(), torch.tensor([0.0]))  # plain SGD for excluded tensors


@pytest.mark.parametrize("name", ["sgd", "lars", "adamw"])
def test_each_optimizer_reduces_a_quadratic(name):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = build_optimizer(name, model, lr=0.05 if name != "lars" else 0.5, weight_decay=0.0)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    first = None
    for _ in range(50):
        loss = ((model(x) - y) ** 2).mean()
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_knn_weighted_vote_closed_form():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    q = torch.tensor([[1.0, 0.05], [0.05, 1.0]])
    assert knn_predict(bank, labels, q, 2, k=3, temperature=0.1).tolist() == [0, 1]
    # with k=1 only the nearest votes
    assert knn_predict(bank, labels, torch.tensor([[0.6, 0.8]]), 2, k=1).tolist() == [1]
    assert knn_accuracy(bank, labels, q, torch.tensor([0, 0]), 2, k=3) == 0.5


def test_knn_weights_make_near_neighbours_count_more():
    # two far class-0 neighbours against one very close class-1 neighbour
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([1, 0, 0])
    q = torch.tensor([[1.0, 0.3]])
    assert knn_predict(bank, labels, q, 2, k=3, temperature=0.1).item() == 1
    assert knn_predict(bank, labels, q, 2, k=3, temperature=100.0).item() == 0  # ~uniform votes: majority


@pytest.mark.parametrize("name,dim", [("small_cnn", 128), ("resnet18", 512)])
def test_backbones_output_features(name, dim):
    net, d = build_backbone(name, in_channels=1, cifar_stem=True)
    assert d == dim
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, dim)


def test_cifar_stem_keeps_resolution():
    net, _ = build_backbone("resnet18", 3, cifar_stem=True)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, nn.Identity)
    plain, _ = build_backbone("resnet18", 3, cifar_stem=False)
    assert plain.conv1.stride == (2, 2)


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ContrastiveError, match="unknown backbone 'resnet9'.*small_cnn"):
        build_backbone("resnet9")


def test_output_width_of_a_user_encoder_by_one_forward_pass():
    # feature_dim(encoder, channels, size) became output_width(module, items, reader): the width of
    # whatever the encoder returns on the first item, as the reader feeds it.
    reader = Reader("image", {"channels": 1, "image_size": 16, "cifar_stem": False})
    items = ImageSet(images=torch.zeros(3, 1, 16, 16, dtype=torch.uint8), labels=torch.zeros(3))
    cnn, dim = build_backbone("small_cnn", in_channels=1)
    assert output_width(cnn, items, reader) == dim == 128
    assert output_width(nn.Flatten(), items, reader) == 16 * 16  # the reader's 16 px, one channel
    # the item's own size is not what counts: the reader resizes 20 px images to its 16
    larger = ImageSet(images=torch.zeros(2, 1, 20, 20, dtype=torch.uint8))
    assert output_width(nn.Flatten(), larger, reader) == 16 * 16
    cnn.train()
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    output_width(cnn, items, reader)
    assert cnn.training  # the mode is given back ...
    assert all(torch.equal(v, before[k]) for k, v in cnn.state_dict().items())  # ... and BN statistics are unchanged


def test_limit_items_draws_from_every_class_and_is_stable():
    from contrastive.subsets import limit_items

    labels = torch.arange(10).repeat_interleave(50)  # stored class by class, as folders and the digits are
    images = ImageSet(images=torch.zeros(500, 1, 2, 2, dtype=torch.uint8), labels=labels)
    a, b = limit_items(images, 100), limit_items(images, 100)
    assert len(a) == 100 and torch.equal(a.labels, b.labels)
    assert set(a.labels.tolist()) == set(range(10))
    assert limit_items(images, None) is images and limit_items(images, 1000) is images
    assert not torch.equal(limit_items(images, 100, seed=1).labels, a.labels)  # the seed picks the draw


def test_precision_auto_follows_the_hardware(monkeypatch):
    from contrastive import device as dev

    cpu = torch.device("cpu")
    assert dev.resolve_precision("fp32", cpu) == "fp32" and dev.resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: False)
    assert dev.resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: True)
    assert dev.resolve_precision("auto", cpu) == "bf16"
