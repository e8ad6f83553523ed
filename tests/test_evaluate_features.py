"""Features of an encoder (contrastive/evaluate/features.py): their width, and the tensor path for items
held in memory."""

from __future__ import annotations

import torch
from torch import nn

from contrastive.evaluate.features import extract_features, output_width
from contrastive.image.augment import eval_transform
from contrastive.image.backbones import build_backbone
from contrastive.image.data import ImageSet
from contrastive.modality import Reader
from helpers import make_splits


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
