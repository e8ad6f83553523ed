"""Subsets of the data (contrastive/subsets.py)."""

import torch

from contrastive.image.data import ImageSet


def test_limit_items_draws_from_every_class_and_is_stable():
    from contrastive.subsets import limit_items

    labels = torch.arange(10).repeat_interleave(50)  # stored class by class, as folders and the digits are
    images = ImageSet(images=torch.zeros(500, 1, 2, 2, dtype=torch.uint8), labels=labels)
    a, b = limit_items(images, 100), limit_items(images, 100)
    assert len(a) == 100 and torch.equal(a.labels, b.labels)
    assert set(a.labels.tolist()) == set(range(10))
    assert limit_items(images, None) is images and limit_items(images, 1000) is images
    assert not torch.equal(limit_items(images, 100, seed=1).labels, a.labels)  # the seed picks the draw
