"""Encoders: one registry from a name to a network that maps images to feature vectors.

Every backbone returns (N, feat_dim) features after pooling, which is what the projection
heads, the kNN monitor and the linear probe consume. A backbone that can also give the map
before pooling has `local_features(x)` (N, D, H, W) (Deep InfoMax and CPC use it).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from contrastive.errors import ContrastiveError


NORMS: dict[str, Callable[[int], nn.Module]] = {"batch": nn.BatchNorm2d, "layer": lambda c: nn.GroupNorm(1, c)}


class SmallCNN(nn.Module):
    """Four 3x3 conv-BN-ReLU blocks, two of them strided: trains in minutes on a 2-core CPU.

    For 28 px digits the maps go 28 -> 28 -> 14 -> 7 -> 7. `local_features(x)` is that last
    map (N, 4w, 7, 7); `forward(x)` average-pools it to a pool x pool grid and flattens it,
    (N, 4w * pool^2). pool=1 is global average pooling; a 2x2 grid keeps where the strokes
    are, which global pooling throws away (label-efficiency issue: pooling one trained map
    3x3 instead of 1x1 raised a 40-label linear probe from 0.72 to 0.80).

    norm="layer" puts layer norm (GroupNorm with one group: over each item's channels and
    locations) where batch norm was, so no item's features depend on the rest of the batch.
    """

    def __init__(self, in_channels: int, width: int = 32, pool: int = 1, norm: str = "batch"):
        super().__init__()
        w = width
        if norm not in NORMS:
            raise ValueError(f"SmallCNN: norm must be one of {', '.join(NORMS)}, got {norm!r}")

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), NORMS[norm](cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(*block(in_channels, w, 1), *block(w, 2 * w, 2), *block(2 * w, 4 * w, 2),
                                      *block(4 * w, 4 * w, 1))
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.local_dim, self.out_dim = 4 * w, 4 * w * pool * pool

    def local_features(self, x: torch.Tensor) -> torch.Tensor:
        """The map before pooling: (N, local_dim, H/4, W/4)."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)


def small_cnn(in_channels: int, width: int = 32, pool: int = 1, norm: str = "batch") -> tuple[nn.Module, int]:
    net = SmallCNN(in_channels, width, pool, norm)
    return net, net.out_dim


class SmallViT(nn.Module):
    """A small Vision Transformer (Dosovitskiy et al. 2021) from PyTorch's own layers, for 28-32 px images.

    Patches of `patch` x `patch` pixels are embedded by one strided convolution; a CLS token and
    learned position embeddings (for an 8 x 8 grid: 32 px at patch 4) are added, and pre-norm
    transformer blocks (GELU MLP of 4x the width) run on the tokens. `forward(x)` is the CLS
    token after the final LayerNorm, (N, dim), as DINO and MoCo v3 use it; `local_features(x)`
    is the patch tokens as a map (N, dim, H / patch, W / patch). Other grid sizes (28 px digits:
    7 x 7, DINO's small local crops) interpolate the position embeddings bicubically, as DINO's
    official ViT does. Width 192, 3 heads (DeiT-Ti, Touvron et al. 2021) and 6 blocks instead of
    12, so that a CPU can train it.
    """

    def __init__(self, in_channels: int, patch: int = 4, dim: int = 192, depth: int = 6, heads: int = 3,
                 grid: int = 8):
        super().__init__()
        self.patch, self.grid = patch, grid
        self.embed = nn.Conv2d(in_channels, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        nn.init.trunc_normal_(self.position, std=0.02)  # as timm and DINO's ViT
        nn.init.trunc_normal_(self.cls, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.local_dim = self.out_dim = dim

    def _positions(self, h: int, w: int) -> torch.Tensor:
        """Position embeddings (1, 1 + h * w, dim) for an h x w grid of patches."""
        if (h, w) == (self.grid, self.grid):
            return self.position
        cls, grid = self.position[:, :1], self.position[:, 1:]
        d = grid.shape[-1]
        grid = grid.reshape(1, self.grid, self.grid, d).permute(0, 3, 1, 2)  # (1, dim, grid, grid)
        grid = nn.functional.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([cls, grid.flatten(2).transpose(1, 2)], dim=1)

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """(N, 1 + h * w, dim) after the final norm, and the grid's h, w."""
        x = self.embed(x)  # (N, dim, h, w)
        n, _, h, w = x.shape
        x = torch.cat([self.cls.expand(n, -1, -1), x.flatten(2).transpose(1, 2)], dim=1)  # (N, 1 + h w, dim)
        return self.norm(self.blocks(x + self._positions(h, w))), h, w

    def local_features(self, x: torch.Tensor) -> torch.Tensor:
        t, h, w = self.tokens(x)
        return t[:, 1:].transpose(1, 2).reshape(t.shape[0], -1, h, w)  # (N, dim, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(x)[0][:, 0]  # the CLS token, (N, dim)


def vit_tiny(in_channels: int) -> tuple[nn.Module, int]:
    net = SmallViT(in_channels)
    return net, net.out_dim


def torchvision_resnet(name: str, in_channels: int, cifar_stem: bool) -> tuple[nn.Module, int]:
    """A torchvision ResNet without its classifier, randomly initialised (no weights are downloaded).

    cifar_stem: the first conv becomes 3x3 stride 1 and the max-pool is removed, as in the
    SimCLR paper's CIFAR-10 experiments (appendix B.9) and the MoCo CIFAR demo.
    """
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    if cifar_stem:
        net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    feat_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feat_dim


def timm_model(name: str, in_channels: int) -> tuple[nn.Module, int]:
    try:
        import timm
    except ImportError:
        raise ContrastiveError(f"backbone 'timm:{name}' needs timm; install it with: pip install timm") from None
    try:
        net = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels)
    except RuntimeError as e:  # timm raises RuntimeError for unknown names
        raise ContrastiveError(f"timm has no model '{name}' ({e}); list them with timm.list_models()") from None
    return net, net.num_features


RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
BACKBONES: dict[str, Callable[..., tuple[nn.Module, int]]] = {
    "small_cnn": lambda in_channels, cifar_stem: small_cnn(in_channels),
    "small_cnn_grid": lambda in_channels, cifar_stem: small_cnn(in_channels, pool=2),
    # CPC v2 (Hénaff et al. 2020, sec. 4.1, "LN"): layer norm instead of batch norm, since batch statistics let
    # the patches of a batch exchange information and CPC's task be solved through them
    "small_cnn_grid_ln": lambda in_channels, cifar_stem: small_cnn(in_channels, pool=2, norm="layer"),
    # Widths for the size study (SimCLRv2 sec. 4.1: bigger pretrained encoders are more label-efficient; distilled into
    # a smaller student): parameters scale with the width squared, so x0.5 has about a quarter of small_cnn_grid's.
    "small_cnn_grid_half": lambda in_channels, cifar_stem: small_cnn(in_channels, width=16, pool=2),
    "small_cnn_grid_x2": lambda in_channels, cifar_stem: small_cnn(in_channels, width=64, pool=2),
    "small_cnn_grid_x4": lambda in_channels, cifar_stem: small_cnn(in_channels, width=128, pool=2),
    "vit_tiny": lambda in_channels, cifar_stem: vit_tiny(in_channels),  # patch 4, for 28-32 px images
    **{n: (lambda in_channels, cifar_stem, n=n: torchvision_resnet(n, in_channels, cifar_stem)) for n in RESNETS},
}


def build_backbone(name: str, in_channels: int = 3, cifar_stem: bool = False) -> tuple[nn.Module, int]:
    """(encoder, feat_dim) for `name`: small_cnn, resnet18..152, or timm:<model name>."""
    if name.startswith("timm:"):
        return timm_model(name[len("timm:") :], in_channels)
    if name not in BACKBONES:
        raise ContrastiveError(
            f"unknown backbone '{name}'; choose one of: {', '.join(BACKBONES)}, or timm:<name> with timm installed"
        )
    return BACKBONES[name](in_channels=in_channels, cifar_stem=cifar_stem)
