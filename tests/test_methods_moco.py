"""MoCo v2 (contrastive/methods/moco.py): the queue, the key encoder and shuffled / split batch norm."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from contrastive.image.backbones import small_cnn
from contrastive.methods import MoCo, moco
from contrastive.norm import SplitBatchNorm2d
from helpers import fixed_views, random_images, small_method, tiny_encoder, train_steps


def test_moco_queue_is_fifo_and_wraps():
    model = small_method("moco")  # queue of 40
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
    model = small_method("moco")
    views = fixed_views()
    queue_before = model.queue.clone()
    # The loss of a step must use the queue as it was before the step's keys were added.
    from contrastive.losses import info_nce
    with torch.no_grad():
        q = model.query(views[0])
        k = model.key(views[1])
        expected = info_nce(q, k, queue_before, model.options.temperature)
    loss, _ = model(views)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(model.queue[:16], k)  # and the keys went in after
    train_steps(model, views, 4)
    torch.testing.assert_close(model.queue.norm(dim=1), torch.ones(model.queue.shape[0]))


def test_moco_symmetric_enqueues_both_key_sets():
    enc, d = tiny_encoder()
    model = MoCo(enc, d, moco.Options(proj_hidden=16, proj_dim=8, queue_size=64, symmetric=True))
    views = fixed_views()
    with torch.no_grad():
        k1, k2 = model.key(views[0]), model.key(views[1])
    model(views)
    torch.testing.assert_close(model.queue[:32], torch.cat([k1, k2]))
    assert int(model.queue_ptr) == 32


def test_moco_refuses_batch_larger_than_queue():
    enc, d = tiny_encoder()
    model = MoCo(enc, d, moco.Options(proj_hidden=16, proj_dim=8, queue_size=8))
    with pytest.raises(ValueError, match="queue"):
        model(fixed_views(n=16))


def test_moco_with_bn_splits_steps_and_its_encoder_loads_into_a_plain_backbone():
    from contrastive.image.backbones import small_cnn

    enc, d = tiny_encoder()
    model = MoCo(enc, d, moco.Options(proj_hidden=16, proj_dim=8, temperature=0.2, queue_size=40, ema=0.9, bn_splits=4))
    before = copy.deepcopy(model.encoder.state_dict())
    losses = train_steps(model, fixed_views(), 5)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(before["features.0.weight"], model.encoder.state_dict()["features.0.weight"])
    assert not torch.equal(before["features.1.running_mean"], model.encoder.state_dict()["features.1.running_mean"])
    plain, _ = small_cnn(1, width=4)
    plain.load_state_dict(model.encoder.state_dict())  # strict: the same keys as plain BN
    x = fixed_views()[0]
    torch.testing.assert_close(plain.eval()(x), model.encoder.eval()(x))


def test_moco_bn_splits_converts_both_encoders_and_shuffles_the_key_batch():
    torch.manual_seed(0)
    encoder, d = small_cnn(1, width=4)
    plain = copy.deepcopy(encoder)
    model = MoCo(encoder, d, moco.Options(proj_hidden=16, proj_dim=8, queue_size=32, bn_splits=2))
    for net in (model.encoder, model.key_encoder):
        assert sum(isinstance(m, SplitBatchNorm2d) and m.splits == 2 for m in net.modules()) == 4
    x = random_images(8, seed=4, size=12)[1]
    torch.manual_seed(7)
    perm = torch.randperm(8)  # the permutation the key batch will be dealt in
    torch.manual_seed(7)
    keys = model.key(x)
    # expected: a plain-BN key network on each half of the shuffled batch, then the original order
    ref = MoCo(plain, d, moco.Options(proj_hidden=16, proj_dim=8, queue_size=32))
    ref.load_state_dict(model.state_dict())
    with torch.no_grad():
        shuffled = torch.cat([ref._encode_key(x[perm[:4]]), ref._encode_key(x[perm[4:]])])
    expected = torch.empty_like(shuffled)
    expected[perm] = shuffled
    torch.testing.assert_close(keys, expected)
    with torch.no_grad():
        in_order = torch.cat([ref._encode_key(x[:4]), ref._encode_key(x[4:])])
    assert not torch.allclose(keys, in_order, atol=1e-4)
