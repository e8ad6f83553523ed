import pytest
import torch

from contrastive.image.data import DataSplits, ImageSet


@pytest.fixture(autouse=True)
def _few_threads():
    # Tests are many tiny ops; one thread avoids oversubscription on 2-core CI machines.
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def make_splits(n_train=64, n_test=32, classes=4, channels=1, size=16, seed=0) -> DataSplits:
    """A tiny labelled dataset in memory: each class is a bright square at its own position."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        labels = torch.arange(n) % classes
        images = torch.randint(0, 40, (n, channels, size, size), generator=g, dtype=torch.uint8)
        for i, c in enumerate(labels.tolist()):
            r = (c * 4) % (size - 6)
            images[i, :, r:r + 6, r:r + 6] = 220
        return ImageSet(images=images, labels=labels)

    return DataSplits(name="tiny", train=make(n_train), test=make(n_test), num_classes=classes, channels=channels,
                      image_size=size, classes=[str(c) for c in range(classes)])


@pytest.fixture
def tiny_data():
    return make_splits()


TINY_OPTIONS = {  # small heads and queue, so a step takes milliseconds
    "simclr": {"proj_hidden": 32},
    "moco": {"proj_hidden": 32, "queue_size": 64},
    "byol": {"proj_hidden": 32, "pred_hidden": 32},
}


def tiny_config(out, method="simclr", knn_every=1, **kw):
    """A pretraining config sized for make_splits() (64 training images, batch 16)."""
    from contrastive.config import KnnConfig, PretrainConfig

    base = dict(method=method, backbone="small_cnn", epochs=2, batch_size=16, lr=0.1, out=str(out),
                method_options=dict(TINY_OPTIONS[method]), knn=KnnConfig(k=10, every=knn_every))
    if "method_options" in kw:
        base["method_options"].update(kw.pop("method_options"))
    base.update(kw)
    return PretrainConfig(**base)
