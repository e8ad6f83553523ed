"""What the tests share: tiny data, tiny configs, tiny methods and classifiers, quiet logs.

Plain functions and constants, imported by the test modules (`from helpers import ...`); the
fixtures built on them are in conftest.py. No test module imports another test module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from contrastive.batches import ViewSpec, batches
from contrastive.config import KnnConfig, PretrainConfig
from contrastive.evaluate.classifier import Classifier
from contrastive.image import IMAGE
from contrastive.image.backbones import small_cnn
from contrastive.image.data import DataSplits, ImageSet
from contrastive.methods import (BYOL, BarlowTwins, MoCo, MoCoV3, SimCLR, SimSiam, VICReg, barlow_twins, byol, moco,
                                 mocov3, simclr, simsiam, vicreg)
from contrastive.modality import Reader
from contrastive.train import pretrain


def quiet(*args, **kwargs):
    """A `log` that prints nothing."""


# --- data and pretraining configs ---------------------------------------------------------------

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


TINY_OPTIONS = {  # small heads and queues, so that a step takes milliseconds
    "simclr": {"proj_hidden": 32},
    "moco": {"proj_hidden": 32, "queue_size": 64},
    "byol": {"proj_hidden": 32, "pred_hidden": 32},
    "simsiam": {"proj_hidden": 32, "proj_dim": 32, "pred_hidden": 16},
    "barlow_twins": {"proj_hidden": 32, "proj_dim": 32},
    "vicreg": {"proj_hidden": 32, "proj_dim": 32},
    "mocov3": {"proj_hidden": 32, "proj_dim": 16, "pred_hidden": 32},
    "dino": {"out_dim": 64, "proj_hidden": 32, "bottleneck": 16},
    "swav": {"prototypes": 10, "proj_hidden": 32, "proj_dim": 16, "queue_length": 32, "queue_start": 0.0},
    "infomax": {"embed_dim": 16, "embed_hidden": 16},
    "cpc": {"context_hidden": 16, "context_layers": 1},
}


def tiny_config(out, method="simclr", knn_every=1, **kw):
    """A pretraining config sized for make_splits() (64 training images, batch 16)."""
    base = dict(method=method, backbone="small_cnn", epochs=2, batch_size=16, lr=0.1, out=str(out),
                method_options=dict(TINY_OPTIONS[method]), knn=KnnConfig(k=10, every=knn_every))
    if "method_options" in kw:
        base["method_options"].update(kw.pop("method_options"))
    base.update(kw)
    return PretrainConfig(**base)


def parse(argv):
    """The command line's parse of argv (its Namespace)."""
    from contrastive.cli import build_parser

    return build_parser().parse_args(argv)


# --- methods on a tiny encoder ------------------------------------------------------------------

PAIRED_METHODS = ["simsiam", "barlow_twins", "vicreg", "mocov3"]  # two views, one loss of their embeddings


def tiny_encoder():
    torch.manual_seed(0)
    return small_cnn(1, width=4)  # (encoder, 16)


def fixed_views(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 12, 12, generator=g)
    return [x + 0.1 * torch.randn(x.shape, generator=g), x + 0.1 * torch.randn(x.shape, generator=g)]


def small_method(name):
    """A method module with small heads on tiny_encoder()."""
    enc, d = tiny_encoder()
    if name == "simclr":
        return SimCLR(enc, d, simclr.Options(proj_hidden=16, proj_dim=8, head_layers=3, temperature=0.5))
    if name == "moco":
        return MoCo(enc, d, moco.Options(proj_hidden=16, proj_dim=8, temperature=0.2, queue_size=40, ema=0.9))
    if name == "byol":
        return BYOL(enc, d, byol.Options(proj_hidden=32, proj_dim=8, pred_hidden=32, ema=0.9))
    if name == "simsiam":
        return SimSiam(enc, d, simsiam.Options(proj_hidden=32, proj_dim=16, head_layers=3, pred_hidden=8))
    if name == "barlow_twins":
        return BarlowTwins(enc, d, barlow_twins.Options(proj_hidden=32, proj_dim=16, redundancy_weight=0.01))
    if name == "vicreg":
        return VICReg(enc, d, vicreg.Options(proj_hidden=32, proj_dim=16, sim_weight=10.0, var_weight=20.0,
                                             cov_weight=3.0))
    if name == "mocov3":
        return MoCoV3(enc, d, mocov3.Options(proj_hidden=32, proj_dim=16, pred_hidden=32, temperature=0.5, ema=0.9))
    raise ValueError(name)


def train_steps(model, views, steps, lr=0.05):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    losses = []
    for step in range(steps):
        loss, _ = model(views)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_target(step / steps)  # every method has one (a no-op without a target network)
        losses.append(loss.item())
    return losses


def two_batches():
    """Two views from different images, so that pairing a view with itself shows in the loss."""
    return fixed_views(seed=1)[0], fixed_views(seed=2)[0]


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def random_images(n: int, seed: int, size: int = 8) -> list[torch.Tensor]:
    """Two views (n, 1, size, size) of n random images."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size, size, generator=g)
    return [x + 0.1 * torch.randn(x.shape, generator=g), x + 0.1 * torch.randn(x.shape, generator=g)]


def multicrop_batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 1, 12, 12, generator=g) for _ in range(2)] + [torch.randn(n, 1, 6, 6, generator=g)
                                                                          for _ in range(3)]


D64 = torch.float64


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D64)


class TokenEncoder(nn.Module):
    """A stand-in for a sequence encoder: embeddings, a causal convolution, local_features (N, D, L)."""

    def __init__(self, vocab=11, dim=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.conv = nn.Conv1d(dim, dim, 2)
        self.local_dim = self.out_dim = dim

    def local_features(self, tokens):
        x = self.embed(tokens).transpose(1, 2)  # (N, D, L)
        return torch.relu(self.conv(F.pad(x, (1, 0))))  # position t sees tokens t - 1 and t

    def forward(self, tokens):
        return self.local_features(tokens).mean(dim=2)


BATCH = 16  # items per step: divisible by MoCo's 8 BN splits, two items in each


def image_views(spec: ViewSpec) -> list[torch.Tensor]:
    """One batch of the views `spec` asks for, made by the image modality (paper views, 16 px digits)."""
    data = make_splits()
    options = IMAGE.resolve({"views": "paper"}, data)
    views = IMAGE.pretrain_views(spec, data.train, IMAGE.encoder_inputs(data, options), options)
    (batch, _), *_ = batches(data.train, views, torch.arange(BATCH), BATCH, torch.device("cpu"), epoch_seed=0)
    return batch


# --- classifiers (contrastive.evaluate) on tiny_data --------------------------------------------

SIZE, CHANNELS = 16, 1  # tiny_data: 16 px one-channel squares, 4 classes, 64 train / 32 test
READER = Reader("image", {"channels": CHANNELS, "image_size": SIZE, "cifar_stem": False})


def tiny_classifier(seed=0, num_classes=4):
    torch.manual_seed(seed)
    encoder, feat_dim = small_cnn(CHANNELS, width=4)
    return Classifier(encoder, feat_dim, num_classes)


def state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def pretrained_checkpoint(tmp_path, data, method="simclr"):
    cfg = PretrainConfig(method=method, backbone="small_cnn", epochs=1, batch_size=16, out=str(tmp_path / method),
                         method_options=TINY_OPTIONS[method], knn=KnnConfig(k=10, every=0))
    run = pretrain(cfg, data=data, log=quiet).run_dir
    return run / "checkpoint-epoch0001.pt"
