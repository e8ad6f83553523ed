"""View recipes: short functions returning torchvision.transforms.v2 pipelines.

Images arrive as uint8 tensors (C, H, W) and leave as normalised float32 tensors. A
method's views are data: `MultiView([t1, t2])(image)` returns `[t1(image), t2(image)]`.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

# Normalisation constants: ImageNet statistics for colour images (torchvision's models),
# the MNIST training-set statistics for one-channel images.
MEAN = {3: (0.485, 0.456, 0.406), 1: (0.1307,)}
STD = {3: (0.229, 0.224, 0.225), 1: (0.3081,)}

# Below this side length the Gaussian blur is left out: SimCLR's CIFAR-10 recipe drops it
# (arXiv:2002.05709 appendix B.9), and a 10%-of-side kernel is too small to mean anything.
BLUR_MIN_SIZE = 64


class MultiView:
    """Applies each transform to the same image: one augmented view per transform."""

    def __init__(self, transforms: list):
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [t(image) for t in self.transforms]

    def __len__(self) -> int:
        return len(self.transforms)


def to_float(channels: int) -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN[channels], STD[channels])]


def color_jitter(channels: int, brightness: float, contrast: float, saturation: float, hue: float, p: float) -> list:
    """Colour jitter applied with probability p, then random grayscale (p=0.2) for colour images.

    Saturation, hue and grayscale mean nothing for one-channel images and are left out there.
    """
    if channels == 1:
        return [v2.RandomApply([v2.ColorJitter(brightness, contrast)], p=p)]
    return [v2.RandomApply([v2.ColorJitter(brightness, contrast, saturation, hue)], p=p), v2.RandomGrayscale(p=0.2)]


def blur(size: int, p: float) -> list:
    """Gaussian blur, kernel 10% of the side (odd), sigma in [0.1, 2.0] (SimCLR appendix A)."""
    if size < BLUR_MIN_SIZE or p <= 0:
        return []
    kernel = max(3, int(0.1 * size) // 2 * 2 + 1)
    return [v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=p)]


def geometry(size: int, channels: int, min_scale: float) -> list:
    """Random resized crop (aspect 3/4..4/3) and a horizontal flip.

    One-channel 28 px images are taken to be digits or glyphs, for which a mirror image is
    another symbol: no flip there.
    """
    ops = [v2.RandomResizedCrop(size, scale=(min_scale, 1.0), antialias=True)]
    if not (channels == 1 and size <= 32):
        ops.append(v2.RandomHorizontalFlip())
    return ops


def small_gray(size: int) -> bool:
    return size <= 32


def simclr_view(size: int, channels: int, strength: float = 1.0) -> v2.Compose:
    """SimCLR appendix A: crop 0.08-1, flip, jitter(0.8s, 0.8s, 0.8s, 0.2s) p=0.8, grayscale 0.2, blur 0.5.

    For small one-channel images the crop keeps at least 25% of the area: an 8% crop of a
    28 px digit is a handful of pixels with no digit left in it.
    """
    s = strength
    min_scale = 0.25 if channels == 1 and small_gray(size) else 0.08
    return v2.Compose(
        geometry(size, channels, min_scale)
        + color_jitter(channels, 0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, p=0.8)
        + blur(size, p=0.5)
        + to_float(channels)
    )


def moco_view(size: int, channels: int) -> v2.Compose:
    """MoCo v2 ("aug+", arXiv:2003.04297): crop 0.2-1, jitter(0.4, 0.4, 0.4, 0.1) p=0.8, grayscale 0.2, blur 0.5, flip."""
    min_scale = 0.25 if channels == 1 and small_gray(size) else 0.2
    return v2.Compose(
        geometry(size, channels, min_scale)
        + color_jitter(channels, 0.4, 0.4, 0.4, 0.1, p=0.8)
        + blur(size, p=0.5)
        + to_float(channels)
    )


def byol_views(size: int, channels: int) -> list[v2.Compose]:
    """BYOL table 6: the asymmetric pair. Blur p = 1.0 / 0.1, solarize p = 0.0 / 0.2;
    crop 0.08-1, flip, jitter(0.4, 0.4, 0.2, 0.1) p=0.8, grayscale 0.2 in both."""
    min_scale = 0.25 if channels == 1 and small_gray(size) else 0.08
    views = []
    for blur_p, solarize_p in ((1.0, 0.0), (0.1, 0.2)):
        ops = geometry(size, channels, min_scale) + color_jitter(channels, 0.4, 0.4, 0.2, 0.1, p=0.8) + blur(size, blur_p)
        if solarize_p > 0:
            ops.append(v2.RandomSolarize(threshold=128, p=solarize_p))  # uint8 images: threshold at half range
        views.append(v2.Compose(ops + to_float(channels)))
    return views


def method_views(method: str, size: int, channels: int, strength: float = 1.0) -> MultiView:
    """The two-view recipe each method was published with."""
    if method == "simclr":
        return MultiView([simclr_view(size, channels, strength)] * 2)
    if method == "moco":
        return MultiView([moco_view(size, channels)] * 2)
    if method == "byol":
        return MultiView(byol_views(size, channels))
    raise ValueError(f"no view recipe for method '{method}'")


def eval_transform(size: int, channels: int) -> v2.Compose:
    """Evaluation: resize the short side and centre-crop to `size` (a no-op at the native size), normalise."""
    return v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)] + to_float(channels))


def train_transform(size: int, channels: int) -> v2.Compose:
    """Light augmentation for supervised training / fine-tuning: crop 0.5-1 (and flip where it applies)."""
    return v2.Compose(geometry(size, channels, 0.5) + to_float(channels))
