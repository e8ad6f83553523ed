"""Batch augmentation: a view recipe of `augment`, applied to a whole batch at once.

The per-image torchvision pipeline spends about a millisecond per pair of views on a 28 px
digit, and that dominates pretraining time on small images. Here one recipe is applied to a uint8 batch
(N, C, H, W) in a few tensor operations, on whatever device the batch lives on, with
every sample drawing its own random parameters. The distributions are those of the v2
transforms in `augment` (crop boxes, jitter factors and order, probabilities); two
details differ: the resize is bilinear without antialiasing, and the colour operations
run on float images rather than rounding to uint8 between steps.

`BatchAugment(recipe)` and `recipe.per_image()` are built from the same `augment.ViewRecipe`,
so the two paths cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache, partial

import torch
import torch.nn.functional as F

from contrastive.image.augment import BLUR_SIGMA, MEAN, STD, ViewRecipe, blur_kernel_size, method_recipes

RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's default aspect-ratio range (width / height)
CROP_TRIES = 10  # RandomResizedCrop draws up to 10 boxes before it falls back to a centre crop
LUMA = (0.2989, 0.587, 0.114)  # torchvision's RGB -> grayscale weights
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")  # the op ids of `order`, as in ColorJitter


@lru_cache(maxsize=None)
def _constant(values: tuple, device, dtype=torch.float32) -> torch.Tensor:
    """A small constant tensor, made once per device: copying it from the host each call
    would wait for the device (CUDA syncs on every pageable host-to-device copy)."""
    return torch.tensor(values, device=device, dtype=dtype)


@dataclass(frozen=True)
class BatchAugment:
    """One view recipe applied to a whole batch, every sample with its own random parameters.

    The steps, their order and their probabilities are the recipe's (see ViewRecipe):
    random resized crop and horizontal flip, colour jitter (ops in a random order per
    sample), grayscale, Gaussian blur, solarize, then normalisation with MEAN / STD.
    """

    recipe: ViewRecipe  # what the view is; recipe.per_image() is the same view, image by image

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float32 (N, C, size, size), normalised. Random draws come from
        `generator` (on the images' device), or from that device's global generator."""
        n, _, height, width = images.shape
        return self.apply(images, self.sample_params(n, height, width, images.device, generator))

    def sample_params(self, n: int, height: int, width: int, device, generator: torch.Generator | None = None
                      ) -> dict[str, torch.Tensor]:
        """Per-sample parameters for n images of height x width, all from one uniform draw.

        box (n, 4) long: top, left, height, width of the crop; flip (n,) bool;
        jitter (n,) bool: colour jitter applied; factors (n, 4): brightness, contrast,
        saturation and hue factors; order (n, 4) long: order[:, k] is the JITTER_OPS index
        of the k-th op; gray, blur, solarize (n,) bool; sigma (n,): the blur's sigma.
        """
        u = torch.rand(n, 2 * CROP_TRIES + 21, generator=generator, device=device)
        scale_u, ratio_u, u = u.split([CROP_TRIES, CROP_TRIES, 21], dim=1)
        box = self._crop_boxes(scale_u, ratio_u, u[:, 0], u[:, 1], height, width)

        r = self.recipe
        strengths = r.jitter or (0.0, 0.0, 0.0, 0.0)
        low = _constant(tuple(max(0.0, 1 - s) for s in strengths[:3]) + (-strengths[3],), device)
        high = _constant(tuple(1 + s for s in strengths[:3]) + (strengths[3],), device)
        return {
            "box": box,
            "flip": u[:, 2] < (0.5 if r.flip else 0.0),
            "jitter": u[:, 3] < (r.jitter_p if r.jitter is not None else 0.0),
            "factors": low + (high - low) * u[:, 4:8],  # a zero strength gives the neutral factor
            "order": u[:, 8:12].argsort(dim=1),  # a uniform random permutation per sample
            "gray": u[:, 12] < r.gray_p,
            "blur": u[:, 13] < r.blur_p,
            "sigma": BLUR_SIGMA[0] + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * u[:, 14],
            "solarize": u[:, 15] < r.solarize_p,
            **(self._warp_params(u[:, 16:21], n, device, generator) if r.warp is not None else {}),
        }

    def _warp_params(self, u: torch.Tensor, n: int, device, generator) -> dict[str, torch.Tensor]:
        """RandomAffine's draws (angle, integer shifts, scale, x-shear) and ElasticTransform's
        noise, per sample. warp (n, 5): angle and shear in degrees, shifts in pixels, scale."""
        w, size = self.recipe.warp, self.recipe.size

        def between(x, low, high):
            return low + (high - low) * x

        shift = w.translate * size
        params = {"warp": torch.stack([
            between(u[:, 0], -w.degrees, w.degrees),
            between(u[:, 1], -shift, shift).round(),  # RandomAffine rounds its shifts to whole pixels
            between(u[:, 2], -shift, shift).round(),
            between(u[:, 3], *w.scale),
            between(u[:, 4], -w.shear, w.shear)], dim=1)}
        if w.alpha > 0:
            params["noise"] = torch.rand(n, 2, size, size, generator=generator, device=device) * 2 - 1
        return params

    def _crop_boxes(self, scale_u, ratio_u, top_u, left_u, height: int, width: int) -> torch.Tensor:
        """RandomResizedCrop's boxes for a batch: the first of CROP_TRIES draws that fits, else
        the central crop clamped to the ratio range. Returns (n, 4) long: top, left, height, width."""
        min_scale, max_scale = self.recipe.min_scale, self.recipe.max_scale
        area = height * width * (min_scale + (max_scale - min_scale) * scale_u)  # (n, tries)
        log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
        ratio = torch.exp(log_lo + (log_hi - log_lo) * ratio_u)
        w = torch.sqrt(area * ratio).round()
        h = torch.sqrt(area / ratio).round()
        fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = fits.int().argmax(dim=1, keepdim=True)  # index of the first try that fits (0 if none does)
        w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
        # A uniform integer in [0, side - crop], as torch.randint(0, side - crop + 1).
        top = (top_u * (height - h + 1)).floor().clamp(max=height - h)
        left = (left_u * (width - w + 1)).floor().clamp(max=width - w)
        box = torch.stack([top, left, h, w], dim=1).long()

        if width / height < RATIO[0]:
            fallback_w, fallback_h = width, int(round(width / RATIO[0]))
        elif width / height > RATIO[1]:
            fallback_w, fallback_h = int(round(height * RATIO[1])), height
        else:
            fallback_w, fallback_h = width, height
        fallback = _constant(((height - fallback_h) // 2, (width - fallback_w) // 2, fallback_h, fallback_w),
                             box.device, torch.long)
        return torch.where(fits.any(dim=1, keepdim=True), box, fallback)

    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The recipe with the given parameters: deterministic. `images` is uint8, or float in [0, 1].
        Steps this recipe never uses (probability 0) are skipped whatever the masks say."""
        r = self.recipe
        if images.dim() != 4 or images.shape[1] != r.channels:
            raise ValueError(f"expected images (N, {r.channels}, H, W), got {tuple(images.shape)}")
        # Crop first, so that everything after runs on size x size images; the crop is linear,
        # so scaling uint8 to [0, 1] can wait until after it.
        x = resized_crop(images.float(), params["box"], params["flip"], r.size)  # (N, C, size, size)
        if images.dtype == torch.uint8:
            x.div_(255)
        if r.warp is not None:
            x = warp(x, params["warp"], params.get("noise"), r.warp.alpha, r.warp.sigma)
        # Each step below changes only the samples it applies to (see on_samples).
        if r.jitter is not None and r.jitter_p > 0:
            for k in range(4):  # in round k every jittered sample takes the k-th op of its own order
                for op, strength in enumerate(r.jitter):
                    if strength > 0:
                        due = params["jitter"] & (params["order"][:, k] == op)
                        x = on_samples(x, due, JITTER_KERNELS[op], params["factors"][:, op])
        if r.gray_p > 0:
            x = on_samples(x, params["gray"], lambda y: grayscale(y).expand_as(y).contiguous())
        if r.blur_p > 0:
            blur = partial(gaussian_blur, kernel_size=blur_kernel_size(r.size))
            x = on_samples(x, params["blur"], blur, params["sigma"])
        if r.solarize_p > 0:
            x = on_samples(x, params["solarize"], solarize)
        mean = _constant(MEAN[r.channels], x.device).view(1, -1, 1, 1)
        std = _constant(STD[r.channels], x.device).view(1, -1, 1, 1)
        return x.sub_(mean).div_(std)


# --- batch kernels: float images (N, C, H, W) in [0, 1], one parameter per sample ----------


def on_samples(x: torch.Tensor, mask: torch.Tensor, fn, *per_sample: torch.Tensor) -> torch.Tensor:
    """x with the samples where mask (N,) is set replaced by fn(those samples, their
    per_sample values); the other samples are left untouched. fn works sample by sample.

    On the CPU fn runs on the selected samples only, written back into x in place: each
    jitter op then runs once per sample instead of once per round. On an accelerator,
    finding the selected samples would make the host wait for the device; there fn runs
    on the whole batch and a select keeps what is due, with no wait.
    """
    if x.device.type != "cpu":
        return torch.where(mask.view(-1, 1, 1, 1), fn(x, *per_sample), x)
    idx = mask.nonzero().squeeze(1)
    if idx.numel() == 0:
        return x
    if idx.numel() == x.shape[0]:
        return fn(x, *per_sample)
    return x.index_copy_(0, idx, fn(x[idx], *(p[idx] for p in per_sample)))


def resized_crop(x: torch.Tensor, box: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """Crops box (N, 4: top, left, height, width) out of each image, resizes it bilinearly to
    size x size and mirrors the samples where flip is set.

    One grid_sample with a per-sample sampling grid; it is faster here than roi_align and
    than two interpolation matmuls (256 x 3 x 32 x 32, one CPU thread: 2.7 ms vs 17 ms and
    3.4 ms; 45 ms vs 190 ms and 72 ms at 96 x 96). The grid holds the source positions of
    crop-then-resize (half-pixel centres, align_corners=False), clamped to the box's edge
    pixels, so the result equals torchvision's resized_crop without antialiasing.
    """
    n, _, height, width = x.shape
    top, left, h, w = box.to(x.dtype).unbind(1)
    centres = (torch.arange(size, device=x.device, dtype=x.dtype) + 0.5) / size  # fractions of the box
    ys = (top[:, None] + centres * h[:, None] - 0.5).clamp(top[:, None], (top + h - 1)[:, None])  # (N, size)
    xs = (left[:, None] + centres * w[:, None] - 0.5).clamp(left[:, None], (left + w - 1)[:, None])
    xs = torch.where(flip[:, None], xs.flip(1), xs)
    # Pixel positions -> grid_sample's [-1, 1] coordinates (align_corners=False).
    gx, gy = (2 * xs + 1) / width - 1, (2 * ys + 1) / height - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # (N, size, size, 2): x, y
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def warp(x: torch.Tensor, affine: torch.Tensor, noise: torch.Tensor | None, alpha: float, sigma: float
         ) -> torch.Tensor:
    """RandomAffine then ElasticTransform, per sample, as one grid_sample (one resampling
    instead of torchvision's two, so slightly less blur); black outside the image.

    affine (N, 5): angle, x shift, y shift (pixels), scale, x-shear (degrees), taken as the
    forward map p -> centre + shift + R(angle) Sh(shear) scale (p - centre); noise (N, 2, H, W)
    in [-1, 1], blurred with sigma and times alpha / width, displaces each output pixel's
    sampling position as ElasticTransform does (in grid units). The output pixel p reads
    the input at the inverse affine map of p + displacement.
    """
    n, _, height, width = x.shape
    angle, dx, dy, scale, shear = affine.unbind(1)
    a, s = torch.deg2rad(angle), torch.deg2rad(shear)
    # Forward linear part R(a) @ [[1, -tan s], [0, 1]] * scale, inverted in closed form (det = scale^2).
    m = torch.stack([torch.cos(a), -torch.cos(a) * torch.tan(s) - torch.sin(a),
                     torch.sin(a), -torch.sin(a) * torch.tan(s) + torch.cos(a)], dim=1).view(n, 2, 2) * scale.view(n, 1, 1)
    inverse = torch.linalg.inv(m)
    # Output grid in [-1, 1] (align_corners=False); shifts in the same units (x: 2 / width per pixel).
    ys = (torch.arange(height, device=x.device, dtype=x.dtype) * 2 + 1) / height - 1
    xs = (torch.arange(width, device=x.device, dtype=x.dtype) * 2 + 1) / width - 1
    base = torch.stack(torch.broadcast_tensors(xs[None, :], ys[:, None]), dim=-1).expand(n, height, width, 2)
    if noise is not None:
        kernel = int(8 * sigma + 1) | 1  # ElasticTransform's kernel side, made odd
        rows, cols = (blur_matrix(side, sigma, kernel, x.device, x.dtype) for side in (height, width))
        blurred = rows @ noise.to(x.dtype) @ cols.T  # == gaussian_blur(noise, sigma, kernel), as two matmuls
        base = base + blurred.permute(0, 2, 3, 1) * (alpha / width)
    # Rotation and shear act in pixels, so move to pixel offsets from the centre and back (non-square images).
    half = torch.tensor([width / 2, height / 2], device=x.device, dtype=x.dtype)
    shift = torch.stack([dx, dy], dim=1)[:, None, None, :]
    pixels = base * half - shift
    source = torch.einsum("nij,nhwj->nhwi", inverse, pixels) / half
    return F.grid_sample(x, source, mode="bilinear", padding_mode="zeros", align_corners=False)


@lru_cache(maxsize=32)
def blur_matrix(side: int, sigma: float, kernel_size: int, device, dtype=torch.float32) -> torch.Tensor:
    """(side, side) matrix B with B @ v = v blurred by a Gaussian of `sigma` with reflect padding (the
    1-D pass of gaussian_blur). The elastic warp blurs with one sigma for every sample, so its blur is
    two matrix products instead of a grouped convolution with a kernel per image (6x faster here)."""
    offsets = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    pad = kernel_size // 2
    matrix = torch.zeros(side, side, dtype=torch.float64)
    for i in range(side):
        for k in range(kernel_size):
            j = i + k - pad
            j = -j if j < 0 else (2 * (side - 1) - j if j >= side else j)  # reflect, edge not repeated
            matrix[i, j] += weights[k]
    return matrix.to(device=device, dtype=dtype)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luminance (N, 1, H, W); a one-channel image is its own."""
    if x.shape[1] == 1:
        return x
    n, _, height, width = x.shape
    weights = _constant(LUMA, x.device, x.dtype)
    return (weights @ x.reshape(n, 3, height * width)).view(n, 1, height, width)  # 3x faster than 3 slices on CPU


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * x + (1 - factor) * other, clamped to [0, 1]."""
    return torch.lerp(other, x, factor.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * factor.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the mean luminance of each image."""
    return _blend(x, grayscale(x).mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with each image's own grayscale version."""
    return _blend(x, grayscale(x), factor)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotates the hue of RGB images by shift (N,), a fraction of the colour circle.

    A hue rotation keeps value (the largest channel) and chroma (largest minus smallest),
    so only the hue angle is computed, in sixths of the circle from the channel holding the
    maximum, and the channels are rebuilt with the hexcone formula
    channel = value - chroma * clamp(min(k, 4 - k), 0, 1), k = (n + 6 * hue) mod 6,
    with n = 5, 3, 1 for red, green and blue.
    """
    r, g, b = x.unbind(1)
    value, low = x.amax(dim=1), x.amin(dim=1)
    chroma = value - low
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    sixths = torch.where(value == r, (g - b) / safe,
                         torch.where(value == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = (sixths / 6 + shift.view(-1, 1, 1)).remainder(1.0)
    n = _constant((5.0, 3.0, 1.0), x.device, x.dtype).view(1, 3, 1, 1)
    k = (n + 6 * hue[:, None]).remainder(6.0)
    return value[:, None] - chroma[:, None] * torch.minimum(k, 4 - k).clamp(0, 1)


def solarize(x: torch.Tensor) -> torch.Tensor:
    """Inverts the pixels at or above half range (128 of 255, as the uint8 recipe)."""
    return torch.where(x >= 0.5, 1 - x, x)


JITTER_KERNELS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)  # indexed as JITTER_OPS


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Gaussian blur with sigma (N,) per sample and reflect padding, as two 1-D passes of a
    grouped convolution: the batch and channels are folded into groups, one kernel each.
    (On CUDA, cuDNN may run it in TF32, as it does torchvision's blur: errors ~1e-3.)"""
    n, c, height, width = x.shape
    offsets = torch.arange(kernel_size, device=x.device, dtype=x.dtype) - (kernel_size - 1) / 2
    kernel = torch.exp(-0.5 * (offsets / sigma[:, None]) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (N * C, k)
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, n * c, height, width), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, kernel.view(n * c, 1, 1, kernel_size), groups=n * c)  # along rows
    y = F.conv2d(y, kernel.view(n * c, 1, kernel_size, 1), groups=n * c)  # along columns
    return y.view(n, c, height, width)


# --- the named recipes of `augment`, batched --------------------------------------------


def batch_method_views(method: str, size: int, channels: int, strength: float = 1.0) -> list[BatchAugment]:
    """The two views of `augment.method_recipes`, one BatchAugment per view."""
    return [BatchAugment(recipe) for recipe in method_recipes(method, size, channels, strength)]
