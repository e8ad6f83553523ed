"""SimCLR, MoCo and BYOL modules: a few CPU steps on a tiny backbone and a fixed batch."""

import copy

import pytest
import torch
import torch.nn.functional as F

from contrastive.image.backbones import small_cnn
from contrastive.methods import BYOL, MoCo, SimCLR


def tiny_encoder():
    torch.manual_seed(0)
    return small_cnn(1, width=4)  # (encoder, 16)


def fixed_views(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 12, 12, generator=g)
    return [x + 0.1 * torch.randn(x.shape, generator=g), x + 0.1 * torch.randn(x.shape, generator=g)]


def build(name):
    enc, d = tiny_encoder()
    if name == "simclr":
        return SimCLR(enc, d, 16, 8, head_layers=3, temperature=0.5)
    if name == "moco":
        return MoCo(enc, d, 16, 8, temperature=0.2, queue_size=40, momentum=0.9)
    return BYOL(enc, d, proj_hidden=32, proj_dim=8, pred_hidden=32, base_ema=0.9)


def train_steps(model, views, steps, lr=0.05):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    losses = []
    for step in range(steps):
        loss, _ = model(views)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if hasattr(model, "update_target"):
            model.update_target(step / steps)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", ["simclr", "moco", "byol"])
def test_loss_finite_and_falling_on_a_fixed_batch(name):
    model = build(name)
    losses = train_steps(model, fixed_views(), 25)
    assert all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 0.05, (name, losses)


@pytest.mark.parametrize("name,target", [("moco", ("key_encoder", "key_projector")),
                                         ("byol", ("target_encoder", "target_projector"))])
def test_target_gets_no_gradient_and_moves_by_ema(name, target):
    model = build(name)
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
    m = model.momentum if name == "moco" else 0.9  # BYOL at progress 0: tau = base
    for t in target:
        new_online = getattr(model, t.replace("key_", "").replace("target_", ""))
        for p_t, p_before, p_online in zip(getattr(model, t).parameters(), before[t].parameters(),
                                          new_online.parameters()):
            torch.testing.assert_close(p_t, m * p_before + (1 - m) * p_online)
        # and the online network really changed, so the check above is not vacuous
        assert any(not torch.equal(a, b) for a, b in zip(online[t].parameters(), new_online.parameters()))


def test_simclr_gradient_reaches_both_views():
    model = build("simclr")
    views = [v.clone().requires_grad_(True) for v in fixed_views()]
    loss, _ = model(views)
    loss.backward()
    assert views[0].grad.abs().sum() > 0 and views[1].grad.abs().sum() > 0


def test_byol_target_never_gets_gradient_through_loss():
    model = build("byol")
    loss, _ = model(fixed_views())
    loss.backward()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.predictor.parameters())


def test_byol_pairs_each_views_prediction_with_the_other_views_target():
    model = build("byol")
    x1, x2 = fixed_views(seed=1)[0], fixed_views(seed=2)[0]  # two distinct batches, so the pairing shows

    def by_hand(p, z):  # BYOL eq. 2: 2 - 2 cos(p, z), averaged over the batch
        return (2 - 2 * F.cosine_similarity(p, z, dim=1)).mean()

    with torch.no_grad():
        p1, p2 = model.online(x1), model.online(x2)
        z1, z2 = model.target(x1), model.target(x2)
    loss, _ = model([x1, x2])
    torch.testing.assert_close(loss, by_hand(p1, z2) + by_hand(p2, z1))
    # the same-view pairing, p1 with z1, gives a loss far outside assert_close's tolerance (~1e-5) of it
    assert (loss.detach() - (by_hand(p1, z1) + by_hand(p2, z2))).abs() > 1e-3


def test_byol_tau_follows_cosine_schedule():
    model = build("byol")
    model.update_target(0.0)
    assert float(model.tau) == pytest.approx(0.9)
    model.update_target(0.5)
    assert float(model.tau) == pytest.approx(1 - 0.1 * 0.5)
    model.update_target(1.0)
    assert float(model.tau) == pytest.approx(1.0)


def test_moco_queue_is_fifo_and_wraps():
    model = build("moco")  # queue of 40
    K = model.queue.shape[0]
    batches = [F.normalize(torch.randn(16, 8), dim=1) for _ in range(3)]
    for b in batches:
        model.enqueue(b)
    # 48 keys into 40 slots: slots 0..7 hold the last 8 keys of batch 3, 8..15 the first 8 of batch 3
    torch.testing.assert_close(model.queue[16:32], batches[1])
    torch.testing.assert_close(model.queue[0:8], batches[2][8:])
    torch.testing.assert_close(model.queue[32:40], batches[2][:8])
    assert int(model.queue_ptr) == 48 % K


def test_moco_queue_holds_normalized_keys_after_steps_and_is_updated_after_loss():
    model = build("moco")
    views = fixed_views()
    queue_before = model.queue.clone()
    # The loss of a step must use the queue as it was before the step's keys were added.
    from contrastive.losses import info_nce
    with torch.no_grad():
        q = model.query(views[0])
        k = model.key(views[1])
        expected = info_nce(q, k, queue_before, model.temperature)
    loss, _ = model(views)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(model.queue[:16], k)  # and the keys went in after
    train_steps(model, views, 4)
    torch.testing.assert_close(model.queue.norm(dim=1), torch.ones(model.queue.shape[0]))


def test_moco_symmetric_enqueues_both_key_sets():
    enc, d = tiny_encoder()
    model = MoCo(enc, d, 16, 8, queue_size=64, symmetric=True)
    views = fixed_views()
    with torch.no_grad():
        k1, k2 = model.key(views[0]), model.key(views[1])
    model(views)
    torch.testing.assert_close(model.queue[:32], torch.cat([k1, k2]))
    assert int(model.queue_ptr) == 32


def test_moco_refuses_batch_larger_than_queue():
    enc, d = tiny_encoder()
    model = MoCo(enc, d, 16, 8, queue_size=8)
    with pytest.raises(ValueError, match="queue"):
        model(fixed_views(n=16))


def test_build_method_passes_the_batch_norm_and_gather_settings():
    from conftest import make_splits

    from contrastive.config import PretrainConfig
    from contrastive.methods import build_method
    from contrastive.norm import SplitBatchNorm2d

    def split_layers(module):
        return [m.splits for m in module.modules() if isinstance(m, SplitBatchNorm2d)]

    data = make_splits()
    moco_cfg = PretrainConfig(method="moco", batch_size=32, method_options={"shuffle_bn": False}).resolve(data)
    assert moco_cfg.method_options["bn_splits"] == 8  # MoCo's default on one process (its file's finish())
    moco = build_method("moco", moco_cfg.method_options, *tiny_encoder())
    assert moco.bn_splits == 8 and not moco.shuffle_bn
    assert split_layers(moco.encoder) == [8] * 4 and split_layers(moco.key_encoder) == [8] * 4
    one = build_method("moco", dict(moco_cfg.method_options, bn_splits=1), *tiny_encoder())
    assert split_layers(one.encoder) == [] and one.shuffle_bn is False
    two_ranks = PretrainConfig(method="moco", batch_size=32).resolve(data, world_size=2)
    assert two_ranks.method_options["bn_splits"] == 1  # under torchrun each rank's BN is already local
    simclr_cfg = PretrainConfig(method="simclr", method_options={"gather": False}).resolve(data)
    assert build_method("simclr", simclr_cfg.method_options, *tiny_encoder()).gather is False
    assert build_method("simclr", dict(simclr_cfg.method_options, gather=True), *tiny_encoder()).gather is True


def test_method_options_come_from_the_method_file_and_unknown_ones_are_refused():
    from conftest import make_splits

    from contrastive.config import PretrainConfig
    from contrastive.errors import ContrastiveError

    data = make_splits()
    simclr, moco, byol = (PretrainConfig(method=m).resolve(data).method_options for m in ("simclr", "moco", "byol"))
    assert (simclr["temperature"], simclr["proj_dim"], simclr["head_layers"]) == (0.5, 128, 3)  # SimCLR / SimCLRv2
    assert (moco["temperature"], moco["queue_size"], moco["ema"]) == (0.2, 4096, 0.99)  # MoCo v2, CIFAR demo
    assert (byol["proj_dim"], byol["proj_hidden"], byol["ema"]) == (256, 4096, 0.996)  # BYOL sec. 3.3
    assert PretrainConfig(method="byol", optimizer="lars").resolve(data).lr == 0.2  # BYOL's LARS base lr
    with pytest.raises(ContrastiveError, match="--queue-size is not an option of simclr"):
        PretrainConfig(method="simclr", method_options={"queue_size": 64}).resolve(data)


def test_moco_with_bn_splits_steps_and_its_encoder_loads_into_a_plain_backbone():
    from contrastive.image.backbones import small_cnn

    enc, d = tiny_encoder()
    model = MoCo(enc, d, 16, 8, temperature=0.2, queue_size=40, momentum=0.9, bn_splits=4)
    before = copy.deepcopy(model.encoder.state_dict())
    losses = train_steps(model, fixed_views(), 5)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(before["features.0.weight"], model.encoder.state_dict()["features.0.weight"])
    assert not torch.equal(before["features.1.running_mean"], model.encoder.state_dict()["features.1.running_mean"])
    plain, _ = small_cnn(1, width=4)
    plain.load_state_dict(model.encoder.state_dict())  # strict: the same keys as plain BN
    x = fixed_views()[0]
    torch.testing.assert_close(plain.eval()(x), model.encoder.eval()(x))
