"""The linear probe (contrastive/evaluate/probe.py)."""

import torch
from torch import nn

from contrastive.evaluate.probe import linear_probe
from contrastive.image.backbones import small_cnn
from helpers import CHANNELS, READER, SIZE, assert_same_state, state


# --- linear probe ---------------------------------------------------------------------------

def test_linear_probe_separates_linearly_separable_classes(tiny_data):
    acc = linear_probe(nn.Flatten(), tiny_data.train, tiny_data.test, 4, READER)
    assert acc >= 0.9  # chance is 0.25


def test_linear_probe_on_constant_features_is_at_chance(tiny_data):
    class Blind(nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 8)

    acc = linear_probe(Blind(), tiny_data.train, tiny_data.test, 4, READER)
    assert acc <= 0.3  # nothing to learn from: the labels must not leak in another way


def test_linear_probe_leaves_the_encoder_bitwise_unchanged(tiny_data):
    encoder, _ = small_cnn(CHANNELS, width=4)
    encoder(torch.randn(8, CHANNELS, SIZE, SIZE))  # train mode: BN running stats move away from their init
    encoder.train()
    before = state(encoder)
    linear_probe(encoder, tiny_data.train, tiny_data.test, 4, READER, epochs=5)
    assert_same_state(state(encoder), before)  # weights and BN running mean / var / count
    assert encoder.training
