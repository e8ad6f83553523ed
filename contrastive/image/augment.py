"""View recipes: one description of an augmented view, built into a per-image or a batched pipeline.

A `ViewRecipe` says what a view is: the crop, the flip, the colour steps and the
probability of each. `recipe.per_image()` builds the torchvision v2 pipeline for one uint8
image (C, H, W); `batch_augment.BatchAugment(recipe)` applies the same recipe to a whole
uint8 batch (N, C, H, W) on the device. Both leave normalised float32 images.

The named recipes below are those each method was published with, fitted to the images at
hand (small digits, images too small to blur) where the recipes are built, so that a
recipe's fields hold the values actually used. A method's views are data:
`MultiView([t1, t2])(image)` returns `[t1(image), t2(image)]`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import KW_ONLY, dataclass

import torch
from torchvision.transforms import v2

# Normalisation constants: ImageNet statistics for colour images (torchvision's models),
# the MNIST training-set statistics for one-channel images.
MEAN = {3: (0.485, 0.456, 0.406), 1: (0.1307,)}
STD = {3: (0.229, 0.224, 0.225), 1: (0.3081,)}

# Below this side length the Gaussian blur is left out: SimCLR's CIFAR-10 recipe drops it
# (arXiv:2002.05709 appendix B.9), and a 10%-of-side kernel is too small to mean anything.
BLUR_MIN_SIZE = 64
BLUR_SIGMA = (0.1, 2.0)  # Gaussian blur sigma range, in pixels (SimCLR appendix A)


def blur_kernel_size(size: int) -> int:
    """Gaussian blur kernel side: 10% of the image side, odd, at least 3 (SimCLR appendix A)."""
    return max(3, int(0.1 * size) // 2 * 2 + 1)


@dataclass(frozen=True)
class Warp:
    """A geometric distortion after the crop: a random affine map (torchvision's RandomAffine:
    rotation, translation, scale, shear parallel to the x axis), then a smooth elastic
    displacement (torchvision's ElasticTransform: uniform noise in [-1, 1] per pixel and axis,
    Gaussian-blurred with sigma, times alpha / side in grid units). Pixels from outside the
    image are black. For handwriting, where a crop cuts the symbol apart but a slant, a shift
    or a wobble of the strokes does not change it (Simard et al. 2003, ICDAR: affine and
    elastic distortions of MNIST digits)."""

    degrees: float  # rotation drawn from [-degrees, degrees]
    translate: float  # shift drawn from [-translate, translate] x side on each axis, rounded to pixels
    scale: tuple[float, float]  # zoom factor range
    shear: float  # x-shear angle drawn from [-shear, shear] degrees
    alpha: float  # elastic strength (torchvision's alpha; 0: no elastic step)
    sigma: float  # elastic smoothness in pixels (torchvision's sigma)

    def __post_init__(self):
        if min(self.degrees, self.translate, self.shear, self.alpha, self.sigma) < 0 or self.translate > 1:
            raise ValueError(f"warp strengths must be non-negative (translate at most 1), got {self}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"warp scale must be a range 0 < low <= high, got {self.scale}")

    def per_image(self) -> list:
        ops = [v2.RandomAffine(self.degrees, translate=(self.translate, self.translate), scale=self.scale,
                               shear=self.shear)]
        if self.alpha > 0:
            ops.append(v2.ElasticTransform(alpha=self.alpha, sigma=self.sigma))
        return ops


@dataclass(frozen=True)
class ViewRecipe:
    """One augmented view. The steps, in order: random resized crop (area min_scale..max_scale of the
    image, aspect 3/4..4/3) and horizontal flip, the warp (if any), colour jitter (its ops in a random order),
    grayscale, Gaussian blur, solarize, then normalisation with MEAN / STD. A step with
    probability 0 is left out."""

    size: int  # output side, pixels: the training image size
    channels: int  # 1 or 3, the dataset's: picks MEAN / STD; the colour steps need 3
    _: KW_ONLY
    min_scale: float  # smallest crop area, as a fraction of the image: the paper's crop range is min_scale..1
    flip: bool  # horizontal flip with probability 0.5 (off for small digits, see small_digits)
    # ColorJitter's brightness, contrast, saturation and hue strengths, from the paper; None: no jitter.
    jitter: tuple[float, float, float, float] | None
    jitter_p: float  # probability that the jitter is applied (0.8 in SimCLR, MoCo v2 and BYOL)
    gray_p: float  # probability of random grayscale (0.2 in all three papers; colour images only)
    blur_p: float  # probability of the Gaussian blur (the paper's; 0 below BLUR_MIN_SIZE)
    solarize_p: float  # probability of solarizing at half range (BYOL's second view: 0.2)
    warp: Warp | None = None  # affine + elastic distortion after the crop (handwriting; see Warp)
    max_scale: float = 1.0  # largest crop area: multi-crop's small local crops keep at most 0.4 (DINO) of it

    def __post_init__(self):
        if self.channels not in MEAN:
            raise ValueError(f"channels must be one of {sorted(MEAN)}, got {self.channels}")
        if not 0 < self.min_scale <= self.max_scale <= 1:
            raise ValueError(f"crop scales must satisfy 0 < min_scale <= max_scale <= 1, got {self.min_scale} "
                             f"and {self.max_scale}")
        for name in ("jitter_p", "gray_p", "blur_p", "solarize_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")
        if self.jitter is not None:
            if len(self.jitter) != 4 or min(self.jitter) < 0 or self.jitter[3] > 0.5:
                raise ValueError(f"jitter must be 4 non-negative strengths with hue <= 0.5, got {self.jitter}")
            if self.channels == 1 and (self.jitter[2] > 0 or self.jitter[3] > 0):
                raise ValueError("saturation and hue jitter need colour images")
        if self.channels == 1 and self.gray_p > 0:
            raise ValueError("random grayscale needs colour images")

    def per_image(self) -> v2.Compose:
        """The torchvision v2 pipeline: uint8 (C, H, W) -> float32 (C, size, size), normalised."""
        ops = [v2.RandomResizedCrop(self.size, scale=(self.min_scale, self.max_scale), antialias=True)]
        if self.flip:
            ops.append(v2.RandomHorizontalFlip())
        if self.warp is not None:
            ops += self.warp.per_image()
        if self.jitter is not None and self.jitter_p > 0:
            ops.append(v2.RandomApply([v2.ColorJitter(*self.jitter)], p=self.jitter_p))
        if self.gray_p > 0:
            ops.append(v2.RandomGrayscale(p=self.gray_p))
        if self.blur_p > 0:
            blur = v2.GaussianBlur(blur_kernel_size(self.size), sigma=BLUR_SIGMA)
            ops.append(v2.RandomApply([blur], p=self.blur_p))
        if self.solarize_p > 0:
            ops.append(v2.RandomSolarize(threshold=128, p=self.solarize_p))  # uint8 images: half range
        return v2.Compose(ops + to_float(self.channels))


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


# --- named recipes ----------------------------------------------------------------------


def small_digits(size: int, channels: int) -> bool:
    """One-channel images of at most 32 px are taken to be digits or glyphs: a mirror image
    is another symbol (no flip), and an 8% crop of a 28 px digit is a handful of pixels
    with no digit left in it (crops keep at least 25% of the area)."""
    return channels == 1 and size <= 32


def published_view(size: int, channels: int, *, min_scale: float, jitter: tuple[float, float, float, float],
                   blur_p: float, solarize_p: float = 0.0) -> ViewRecipe:
    """A paper's view fitted to the images at hand. Jitter p=0.8 and grayscale p=0.2, as in
    all three papers; saturation, hue and grayscale mean nothing for one-channel images and
    are left out there; see small_digits and BLUR_MIN_SIZE for the rest."""
    gray, digits = channels == 1, small_digits(size, channels)
    return ViewRecipe(
        size, channels,
        min_scale=0.25 if digits else min_scale,
        flip=not digits,
        jitter=(jitter[0], jitter[1], 0.0, 0.0) if gray else jitter,
        jitter_p=0.8,
        gray_p=0.0 if gray else 0.2,
        blur_p=blur_p if size >= BLUR_MIN_SIZE else 0.0,
        solarize_p=solarize_p,
    )


def simclr_recipes(size: int, channels: int, strength: float = 1.0) -> list[ViewRecipe]:
    """SimCLR appendix A: crop 0.08-1, flip, jitter(0.8s, 0.8s, 0.8s, 0.2s) p=0.8, grayscale 0.2,
    blur 0.5; s = strength. Both views alike."""
    s = strength
    view = published_view(size, channels, min_scale=0.08, jitter=(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s), blur_p=0.5)
    return [view, view]


def moco_recipes(size: int, channels: int, strength: float = 1.0) -> list[ViewRecipe]:
    """MoCo v2 ("aug+", arXiv:2003.04297): crop 0.2-1, jitter(0.4, 0.4, 0.4, 0.1) p=0.8, grayscale 0.2,
    blur 0.5, flip. Both views alike. The strengths are the paper's: SimCLR's `strength` is not used."""
    del strength
    view = published_view(size, channels, min_scale=0.2, jitter=(0.4, 0.4, 0.4, 0.1), blur_p=0.5)
    return [view, view]


def byol_recipes(size: int, channels: int, strength: float = 1.0) -> list[ViewRecipe]:
    """BYOL table 6: the asymmetric pair. Blur p = 1.0 / 0.1, solarize p = 0.0 / 0.2;
    crop 0.08-1, flip, jitter(0.4, 0.4, 0.2, 0.1) p=0.8, grayscale 0.2 in both.
    The strengths are the paper's: SimCLR's `strength` is not used."""
    del strength
    return [published_view(size, channels, min_scale=0.08, jitter=(0.4, 0.4, 0.2, 0.1), blur_p=blur_p,
                           solarize_p=solarize_p)
            for blur_p, solarize_p in ((1.0, 0.0), (0.1, 0.2))]


# Multi-crop (SwAV sec. 3.2; DINO sec. 3.1): two global crops and small local crops of a smaller side. DINO's
# official defaults: global crops 0.4-1 at 224 px, 8 local crops 0.05-0.4 at 96 px (SwAV: 2 x 224 + 6 x 96).
# Fitted to small images: local crops of half the side (32 -> 16, 28 -> 14 px) and 6 of them, to keep a CPU
# step affordable; on small digits (see small_digits) every crop keeps at least 25% of the area, so the local
# range becomes 0.25-0.4.
MULTICROP_SCALES = (0.4, 0.05, 0.4)  # global min scale, local min scale, split point (global min = local max)
MULTICROP_LOCAL = 6  # number of local crops
MULTICROP_FAMILY = "multicrop"  # the family name of these views (a method's ViewSpec)


def multicrop_recipes(size: int, channels: int, strength: float = 1.0) -> list[ViewRecipe]:
    """DINO's multi-crop views (official DataAugmentationDINO): the two global crops are BYOL's
    asymmetric pair (blur 1.0 / 0.1, solarize 0 / 0.2) with crop area 0.4-1; the local crops have
    half the side, crop area 0.05-0.4 and blur 0.5. Jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale 0.2.
    Global views come first: methods take views[:2] as the global ones. `strength` is not used."""
    del strength
    global_min, local_min, split = MULTICROP_SCALES
    digits = small_digits(size, channels)
    jitter = (0.4, 0.4, 0.2, 0.1)
    globals_ = [dataclasses.replace(published_view(size, channels, min_scale=global_min, jitter=jitter,
                                                   blur_p=blur_p, solarize_p=solarize_p),
                                    min_scale=max(global_min, 0.25) if digits else global_min)
                for blur_p, solarize_p in ((1.0, 0.0), (0.1, 0.2))]
    small = max(1, size // 2)
    local = dataclasses.replace(published_view(small, channels, min_scale=local_min, jitter=jitter, blur_p=0.5),
                                min_scale=0.25 if digits else local_min, max_scale=split,
                                blur_p=0.5 if size >= BLUR_MIN_SIZE else 0.0, flip=not digits)
    return globals_ + [local] * MULTICROP_LOCAL


# family -> its views; a method names one in its ViewSpec. "light": one lightly cropped view (DIM, CPC).
RECIPES = {"simclr": simclr_recipes, "moco": moco_recipes, "byol": byol_recipes,
           MULTICROP_FAMILY: multicrop_recipes,
           "light": lambda size, channels, strength=1.0: [classifier_recipe(size, channels)]}


def method_recipes(method: str, size: int, channels: int, strength: float = 1.0) -> list[ViewRecipe]:
    """The two views each method was published with."""
    if method not in RECIPES:
        raise ValueError(f"no view recipe for method '{method}'")
    return RECIPES[method](size, channels, strength)


# Handwriting views (small one-channel images: digits, glyphs). The paper recipes fit photographs: their
# crops cut a 28 px digit into fragments and their colour steps have little to change on near-binary
# strokes, so the pair is easy to match by a shortcut. Here the symbol stays whole and its shape moves:
# a random affine map and an elastic wobble (Simard et al. 2003 distort MNIST with affine maps and
# elastic fields of sigma 4), a mild crop, and brightness / contrast jitter. The values were chosen on
# the validation split of the embedded digits (BENCHMARKS.md, "Handwriting views").
HANDWRITING_WARP = Warp(degrees=15.0, translate=0.1, scale=(0.8, 1.1), shear=10.0, alpha=34.0, sigma=4.0)
HANDWRITING_MIN_SCALE = 0.6  # crop area 0.6-1 of the image (after which the warp moves it)
HANDWRITING_JITTER = (0.4, 0.4, 0.0, 0.0)  # brightness, contrast; applied with p = 0.8
VIEW_STYLES = ("auto", "paper", "handwriting")


def handwriting(recipe: ViewRecipe) -> ViewRecipe:
    """A method's view with handwriting's geometry and jitter: no flip, no solarize (it inverts the
    strokes), the warp, crops of at least HANDWRITING_MIN_SCALE of the area (a multi-crop local view
    keeps its smaller upper bound)."""
    low = min(max(recipe.min_scale, HANDWRITING_MIN_SCALE), recipe.max_scale)
    return dataclasses.replace(recipe, min_scale=low, flip=False, jitter=HANDWRITING_JITTER, jitter_p=0.8,
                               gray_p=0.0, blur_p=0.0, solarize_p=0.0, warp=handwriting_warp(recipe.size))


def handwriting_warp(size: int) -> Warp:
    """HANDWRITING_WARP (set for 28 px) with its elastic sigma and alpha scaled to `size`; no elastic
    step where the blur kernel (8 sigma + 1) would not fit the image's reflect padding."""
    ratio = size / 28
    sigma, alpha = HANDWRITING_WARP.sigma * ratio, HANDWRITING_WARP.alpha * ratio
    if (int(8 * sigma + 1) | 1) // 2 >= size:
        alpha = 0.0
    return dataclasses.replace(HANDWRITING_WARP, sigma=sigma, alpha=alpha)


def view_style(style: str, size: int, channels: int) -> str:
    """'paper' or 'handwriting': auto picks handwriting for small one-channel images (small_digits)."""
    if style not in VIEW_STYLES:
        raise ValueError(f"unknown view style '{style}'; choose one of: {', '.join(VIEW_STYLES)}")
    if style == "auto":
        return "handwriting" if small_digits(size, channels) else "paper"
    return style


def styled_recipes(method: str, size: int, channels: int, strength: float = 1.0, style: str = "auto", *,
                   local_crops: int | None = None) -> list[ViewRecipe]:
    """A method's views in a style: the paper's (method_recipes) or handwriting's (see handwriting).
    local_crops: for multi-crop views, how many local crops follow the two global ones (None: MULTICROP_LOCAL)."""
    recipes = method_recipes(method, size, channels, strength)
    if method == MULTICROP_FAMILY and local_crops is not None:
        recipes = recipes[:2] + recipes[2:3] * local_crops
    if view_style(style, size, channels) == "handwriting":
        return [handwriting(r) for r in recipes]
    return recipes


def classifier_recipe(size: int, channels: int) -> ViewRecipe:
    """Light augmentation for supervised training / fine-tuning: crop 0.5-1 (and flip where it applies)."""
    return ViewRecipe(size, channels, min_scale=0.5, flip=not small_digits(size, channels), jitter=None,
                      jitter_p=0.0, gray_p=0.0, blur_p=0.0, solarize_p=0.0)


def strong_recipe(size: int, channels: int) -> ViewRecipe:
    """A noisy student's view (Xie et al. 2020, arXiv:1911.04252: the student learns from strongly augmented
    items, the teacher labels clean ones): SimCLR's first pretraining view fitted to the images, in the
    style `auto` picks (handwriting's warp for small digits)."""
    return styled_recipes("simclr", size, channels)[0]


def plain_recipe(size: int, channels: int) -> ViewRecipe:
    """No augmentation: the whole image (aspect within 3/4..4/3) resized to size x size, normalised.
    On a square image of that size it is the identity before normalisation."""
    return ViewRecipe(size, channels, min_scale=1.0, flip=False, jitter=None, jitter_p=0.0, gray_p=0.0, blur_p=0.0,
                      solarize_p=0.0)


def method_views(method: str, size: int, channels: int, strength: float = 1.0) -> MultiView:
    """The per-image pipelines of `method_recipes`: one torchvision transform per view."""
    return MultiView([recipe.per_image() for recipe in method_recipes(method, size, channels, strength)])


def eval_transform(size: int, channels: int) -> v2.Compose:
    """Evaluation: resize the short side and centre-crop to `size` (a no-op at the native size), normalise."""
    return v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)] + to_float(channels))
