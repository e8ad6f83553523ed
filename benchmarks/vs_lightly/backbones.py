"""The networks the two sides train, built here: nothing is added to contrastive.image.backbones.BACKBONES.

Part 2 trains both libraries on one network, torchvision's ResNet-18 with a 3x3 stride-1 first conv and the
max-pool KEPT (32 -> 16 px before layer1). The package has no such variant (its cifar_stem removes the
max-pool), and contrastive.train.pretrain builds its encoder by name, so our side gets it in two steps:
pretrain builds the stock `resnet18` with the CIFAR stem, which draws exactly the weights of
resnet18_stem3_maxpool() from the same seed (a max-pool has no parameters), and the KeepMaxPool callback puts
the max-pool back into every ResNet of the model (the online encoder and its momentum copies) before the first
step. tests/test_benchmarks_layout.py checks that the two give the same weights and the same features.
"""

from __future__ import annotations

import torchvision
from torch import nn

from contrastive.image import backbones as our_backbones
from contrastive.train import Callback

MAXPOOL_BACKBONE = "resnet18_stem3_maxpool"  # the records' name for the variant; not a registry key


def maxpool() -> nn.Module:
    """torchvision ResNet's own stem pool."""
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)


def resnet18_stem3_maxpool(in_channels: int = 3) -> tuple[nn.Module, int]:
    """torchvision ResNet-18 with a 3x3 stride-1 first conv and the max-pool KEPT (maps 32 -> 16 before
    layer1). contrastive.image.backbones has no such variant (cifar_stem removes the max-pool), so this
    benchmark builds it for both libraries."""
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
    feat_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feat_dim


def keep_maxpool(model: nn.Module) -> int:
    """Turn every CIFAR-stem torchvision ResNet inside `model` into resnet18_stem3_maxpool's shape (its
    removed max-pool put back, in place); returns how many it changed. Parameters are untouched, so an
    optimizer built over them stays valid."""
    changed = 0
    for module in model.modules():
        if isinstance(module, torchvision.models.ResNet):
            if module.conv1.kernel_size != (3, 3) or module.conv1.stride != (1, 1):
                raise ValueError(f"expected the CIFAR stem (3x3 stride-1 conv1), got {module.conv1}")
            module.maxpool = maxpool()
            changed += 1
    return changed


class KeepMaxPool(Callback):
    """pretrain() callback: before the first step, give our `resnet18` (CIFAR stem) its max-pool back."""

    def on_start(self, run) -> None:
        if keep_maxpool(run.model) == 0:
            raise ValueError(f"no torchvision ResNet in the model (backbone {run.cfg.backbone!r})")


def to_lightly_split_bn(module: nn.Module, splits: int) -> nn.Module:
    """Every BatchNorm2d -> lightly's SplitBatchNorm (what ResNetGenerator(num_splits=8) uses for MoCo)."""
    from lightly.models.batchnorm import SplitBatchNorm

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, SplitBatchNorm(child.num_features, splits))
        else:
            to_lightly_split_bn(child, splits)
    return module


def lightly_backbone(method: str, arch: str) -> tuple[nn.Module, int]:
    """The network lightly's side trains: generator (its CIFAR recipe), maxpool (part 2: the same network as
    ours) or torchvision (our default encoder exactly); MoCo gets split batch norm over 8 splits."""
    if arch == "generator":  # lightly's CIFAR recipe
        from lightly.models import ResNetGenerator

        resnet = ResNetGenerator("resnet-18", num_splits=8 if method == "moco" else 0)
        return nn.Sequential(*list(resnet.children())[:-1], nn.AdaptiveAvgPool2d(1)), 512
    if arch == "maxpool":  # part 2: the same network as ours
        net, dim = resnet18_stem3_maxpool()
        return (to_lightly_split_bn(net, 8) if method == "moco" else net), dim
    if arch == "torchvision":  # torchvision ResNet-18 with the CIFAR stem, exactly our default encoder
        net, dim = our_backbones.build_backbone("resnet18", 3, cifar_stem=True)
        return (to_lightly_split_bn(net, 8) if method == "moco" else net), dim
    raise ValueError(arch)
