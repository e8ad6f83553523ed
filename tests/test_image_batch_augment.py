"""Tests for contrastive.image.batch_augment.

Every batch step is compared, sample by sample, with torchvision.transforms.v2.functional
applied to the same image with the same parameters. The parameter sampler is checked
against the recipe's ranges and rates, the crop sampler against torchvision's own
RandomResizedCrop. Both paths are built from one `augment.ViewRecipe`: its per-image
pipeline is checked op by op against the recipe and against the papers' pipelines written
out, and whole recipes are compared in distribution between the two paths.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from contrastive.image.augment import (BLUR_MIN_SIZE, MEAN, RECIPES, STD, ViewRecipe, blur_kernel_size,
                                       classifier_recipe, method_recipes, method_views, plain_recipe)
from contrastive.image.batch_augment import RATIO, BatchAugment, batch_method_views


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# Normalising divides by std (about 0.22), so float32 rounding of ~1e-6 in [0, 1] shows up
# as ~5e-6 in the outputs compared here.
TIGHT = dict(atol=2e-5, rtol=0)


def plain(size, channels, **changes) -> BatchAugment:
    """The plain recipe: every random step off unless `changes` turns it on."""
    return BatchAugment(replace(plain_recipe(size, channels), **changes))


def params_for(aug, images, seed=0, **changes):
    """Sampled parameters with the crop box set to the whole image, then `changes` applied."""
    n, _, height, width = images.shape
    generator = torch.Generator(images.device).manual_seed(seed)
    params = aug.sample_params(n, height, width, images.device, generator)
    params["box"] = torch.tensor([0, 0, height, width], device=images.device).repeat(n, 1)
    params.update({k: v.to(images.device) for k, v in changes.items()})
    return params


def expected(images, channels, fn):
    """torchvision, one image at a time, then normalised."""
    return torch.stack([TF.normalize(fn(i, image), MEAN[channels], STD[channels]) for i, image in enumerate(images)])


def correlation(a, b):
    return torch.corrcoef(torch.stack([a.float(), b.float()]))[0, 1].item()


def colour_recipe(size=64, **changes) -> BatchAugment:
    settings = dict(min_scale=0.08, flip=True, jitter=(0.4, 0.3, 0.2, 0.1), jitter_p=0.8, gray_p=0.2, blur_p=0.5,
                    solarize_p=0.3)
    return BatchAugment(ViewRecipe(size, 3, **(settings | changes)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("p", [0.5, 1.0])  # 1.0: every step on every sample
def test_output_shape_dtype_device(device, channels, p):
    if channels == 3:
        aug = colour_recipe(size=20, jitter_p=p, gray_p=p, blur_p=p, solarize_p=p)
    else:
        aug = BatchAugment(ViewRecipe(20, 1, min_scale=0.25, flip=True, jitter=(0.4, 0.4, 0, 0), jitter_p=p,
                                      gray_p=0, blur_p=p, solarize_p=p))
    images = torch.randint(0, 256, (5, channels, 30, 26), dtype=torch.uint8, device=device)
    out = aug(images, torch.Generator(device).manual_seed(0))
    assert out.shape == (5, channels, 20, 20)
    assert out.dtype == torch.float32 and out.device.type == device
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic_given_a_generator(device):
    aug = colour_recipe(size=32)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, device=device)
    first = aug(images, torch.Generator(device).manual_seed(7))
    again = aug(images, torch.Generator(device).manual_seed(7))
    other = aug(images, torch.Generator(device).manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    torch.manual_seed(3)  # no generator: the device's global generator
    from_global = aug(images)
    torch.manual_seed(3)
    assert torch.equal(from_global, aug(images))


def test_identity_recipe_returns_the_normalised_input():
    # With min_scale 1 on a square image every box that fits is the whole image, and the
    # fallback is the whole image too: the crop is exact and nothing else is random.
    for channels in (1, 3):
        images = torch.randint(0, 256, (6, channels, 28, 28), dtype=torch.uint8)
        normalised = TF.normalize(images / 255, MEAN[channels], STD[channels])
        out = plain(28, channels)(images, torch.Generator().manual_seed(0))
        torch.testing.assert_close(out, normalised, **TIGHT)
        per_image = plain_recipe(28, channels).per_image()  # the same recipe, image by image
        torch.testing.assert_close(torch.stack([per_image(image) for image in images]), normalised, **TIGHT)
    # Through apply with the whole-image box, for a batch of non-square images.
    images = torch.rand(3, 3, 20, 30)
    aug = plain(20, 3)
    squashed = TF.resize(images, [20, 20], antialias=False)  # resized, not cropped
    torch.testing.assert_close(aug.apply(images, params_for(aug, images)), TF.normalize(squashed, MEAN[3], STD[3]),
                               **TIGHT)


def test_samples_and_views_draw_independent_parameters():
    aug = colour_recipe(size=32)
    generator = torch.Generator().manual_seed(0)
    one = aug.sample_params(4096, 32, 32, "cpu", generator)
    two = aug.sample_params(4096, 32, 32, "cpu", generator)
    area = one["box"][:, 2] * one["box"][:, 3]
    # The correlation of 4096 independent draws has a standard deviation of 1/64: 0.07 is over 4 sigma.
    assert abs(correlation(area[:-1], area[1:])) < 0.07
    assert abs(correlation(one["factors"][:-1, 0], one["factors"][1:, 0])) < 0.07
    assert abs(correlation(area, two["box"][:, 2] * two["box"][:, 3])) < 0.07
    assert abs(correlation(one["flip"], two["flip"])) < 0.07
    for key in ("jitter", "gray", "blur", "solarize"):
        assert abs(correlation(one[key], two[key])) < 0.07
    # The two views of a method, drawn one after the other from one generator.
    first, second = batch_method_views("byol", 32, 3)
    a = first.sample_params(4096, 32, 32, "cpu", generator)
    b = second.sample_params(4096, 32, 32, "cpu", generator)
    assert abs(correlation(a["box"][:, 2] * a["box"][:, 3], b["box"][:, 2] * b["box"][:, 3])) < 0.07
    assert abs(correlation(a["factors"][:, 3], b["factors"][:, 3])) < 0.07


@pytest.mark.parametrize("min_scale, height, width", [(0.08, 60, 90), (0.8, 60, 90), (0.25, 28, 28)])
def test_crop_boxes_follow_torchvision_sampler(min_scale, height, width):
    aug = plain(16, 3, min_scale=min_scale)
    box = aug.sample_params(20000, height, width, "cpu", torch.Generator().manual_seed(0))["box"].double()
    top, left, h, w = box.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
    # Rounding the sides to whole pixels moves each by at most half a pixel.
    assert ((h + 0.5) * (w + 0.5) >= min_scale * height * width).all()
    assert ((w + 0.5) / (h - 0.5) >= 3 / 4).all() and ((w - 0.5) / (h + 0.5) <= 4 / 3).all()

    # torchvision's sampler itself: area, aspect, position and the rate of centre-crop fallbacks.
    crop = v2.RandomResizedCrop(16, scale=(min_scale, 1.0))
    torch.manual_seed(0)
    reference = torch.tensor([[p["top"], p["left"], p["height"], p["width"]] for p in
                              (crop.make_params([torch.empty(3, height, width)]) for _ in range(3000))]).double()

    def summary(b):
        t, l, hh, ww = b.unbind(1)
        fallback = (t == (height - hh) // 2) & (l == (width - ww) // 2)  # also true of some centred boxes that fit
        return dict(area=(hh * ww / (height * width)).mean(), log_ratio=(ww / hh).log().mean(),
                    top=(t / (height - hh).clamp(min=1)).mean(), fallback=fallback.double().mean())

    ours, theirs = summary(box), summary(reference)
    # 3000 reference draws: standard errors about 0.005 (area), 0.003 (log ratio), 0.006 (position), 0.009 (fallback).
    tolerance = dict(area=0.025, log_ratio=0.02, top=0.03, fallback=0.04)
    for key, tol in tolerance.items():
        assert abs(ours[key] - theirs[key]) < tol, (key, ours[key], theirs[key])


def test_rates_and_ranges_follow_the_recipe():
    n = 20000
    params = colour_recipe().sample_params(n, 64, 64, "cpu", torch.Generator().manual_seed(1))
    # Rates: the standard error of a rate over 20000 draws is at most 0.0035.
    for key, rate in dict(flip=0.5, jitter=0.8, gray=0.2, blur=0.5, solarize=0.3).items():
        assert abs(params[key].float().mean().item() - rate) < 0.015, key
    for column, (low, high) in enumerate([(0.6, 1.4), (0.7, 1.3), (0.8, 1.2), (-0.1, 0.1)]):
        factor = params["factors"][:, column]
        assert low <= factor.min() < low + 0.01 and high - 0.01 < factor.max() <= high
        assert abs(factor.mean().item() - (low + high) / 2) < 0.01
    sigma = params["sigma"]
    assert 0.1 <= sigma.min() < 0.11 and 1.99 < sigma.max() <= 2.0 and abs(sigma.mean().item() - 1.05) < 0.02
    # Within a sample the draws are independent of one another too.
    draws = [params[key].float() for key in ("flip", "jitter", "gray", "blur", "solarize", "sigma")]
    draws += list(params["factors"].unbind(1)) + [params["box"][:, 2] * params["box"][:, 3]]
    for i in range(len(draws)):
        for j in range(i):
            assert abs(correlation(draws[i], draws[j])) < 0.04, (i, j)  # about 5 sigma for 20000 draws
    order = params["order"]
    assert torch.equal(order.sort(dim=1).values, torch.arange(4).expand(n, 4))  # a permutation per sample
    for position in range(4):
        counts = torch.bincount(order[:, position], minlength=4) / n
        assert (counts - 0.25).abs().max() < 0.015
    # A strength above 1 clamps the lower end of the factor at 0, as ColorJitter does.
    strong = colour_recipe(jitter=(1.5, 0, 0, 0)).sample_params(n, 64, 64, "cpu", torch.Generator().manual_seed(2))
    assert strong["factors"][:, 0].min() >= 0 and strong["factors"][:, 0].max() > 2.4
    assert (strong["factors"][:, 1:3] == 1).all() and (strong["factors"][:, 3] == 0).all()  # zero strength: neutral


def test_off_steps_and_byol_rates():
    params = plain(32, 3).sample_params(1000, 32, 32, "cpu", torch.Generator().manual_seed(0))
    for key in ("flip", "jitter", "gray", "blur", "solarize"):
        assert not params[key].any(), key
    first, second = batch_method_views("byol", 64, 3)
    generator = torch.Generator().manual_seed(0)
    a = first.sample_params(20000, 64, 64, "cpu", generator)
    b = second.sample_params(20000, 64, 64, "cpu", generator)
    assert a["blur"].all() and not a["solarize"].any()
    assert abs(b["blur"].float().mean().item() - 0.1) < 0.01
    assert abs(b["solarize"].float().mean().item() - 0.2) < 0.015


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels", [1, 3])
def test_resized_crop_and_flip_match_torchvision(device, channels):
    images = torch.rand(8, channels, 30, 26, device=device)
    # top, left, height, width: the whole image, up- and downscaling, boxes touching each edge, one pixel.
    boxes = torch.tensor([[0, 0, 30, 26], [3, 4, 10, 12], [0, 0, 25, 20], [20, 16, 10, 10],
                          [5, 0, 8, 26], [0, 25, 30, 1], [7, 7, 1, 1], [2, 3, 27, 22]])
    flip = torch.tensor([False, True] * 4)
    aug = plain(16, channels, flip=True)
    out = aug.apply(images, params_for(aug, images, box=boxes, flip=flip))

    def reference(i, image):
        t, l, h, w = boxes[i].tolist()
        crop = TF.resized_crop(image, t, l, h, w, [16, 16], antialias=False)
        return TF.horizontal_flip(crop) if flip[i] else crop

    # The sampling grid holds crop-then-resize's own source positions: only float rounding differs.
    torch.testing.assert_close(out, expected(images, channels, reference), **TIGHT)


def test_uint8_input_is_scaled_to_unit_range():
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    aug = plain(16, 3)
    torch.testing.assert_close(aug.apply(images, params_for(aug, images)),
                               aug.apply(images / 255, params_for(aug, images)), **TIGHT)


JITTER_FUNCTIONS = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]


NEUTRAL = torch.tensor([1.0, 1.0, 1.0, 0.0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", range(4))
def test_each_jitter_op_matches_torchvision(device, op):
    # Bright and dark images, so that the clamps at 0 and 1 are reached.
    images = (torch.rand(8, 3, 12, 12, device=device) * torch.linspace(0.3, 1.6, 8, device=device).view(-1, 1, 1, 1)
              ).clamp(0, 1)
    aug = plain(12, 3, jitter=(0.9, 0.9, 0.9, 0.5), jitter_p=1.0)
    factors = NEUTRAL.repeat(8, 1)
    factors[:, op] = torch.linspace(0.1, 1.9, 8) if op < 3 else torch.linspace(-0.5, 0.5, 8)
    applied = torch.tensor([True] * 6 + [False] * 2)  # the last two pass through untouched
    out = aug.apply(images, params_for(aug, images, factors=factors, jitter=applied))

    def reference(i, image):
        return JITTER_FUNCTIONS[op](image, factors[i, op].item()) if applied[i] else image

    # The hue goes through HSV by other formulas than torchvision's: a looser bound.
    tolerance = dict(atol=1e-4, rtol=0) if op == 3 else TIGHT
    torch.testing.assert_close(out, expected(images, 3, reference), **tolerance)


@pytest.mark.parametrize("channels", [1, 3])
def test_jitter_in_random_order_matches_torchvision(channels):
    n = 24
    images = torch.rand(n, channels, 10, 10)
    jitter = (0.8, 0.8, 0.8, 0.2) if channels == 3 else (0.8, 0.8, 0.0, 0.0)
    aug = plain(10, channels, jitter=jitter, jitter_p=0.8)
    params = params_for(aug, images, seed=5)

    def reference(i, image):
        if not params["jitter"][i]:
            return image
        for op in params["order"][i].tolist():
            if jitter[op] > 0:
                image = JITTER_FUNCTIONS[op](image, params["factors"][i, op].item())
        return image

    assert len({tuple(o) for o in params["order"].tolist()}) > 10  # many different orders are exercised
    torch.testing.assert_close(aug.apply(images, params), expected(images, channels, reference), atol=1e-4, rtol=0)


def test_grayscale_matches_torchvision():
    images = torch.rand(6, 3, 12, 12)
    gray = torch.tensor([True, False] * 3)
    aug = plain(12, 3, gray_p=0.5)
    out = aug.apply(images, params_for(aug, images, gray=gray))
    reference = lambda i, image: TF.rgb_to_grayscale(image, num_output_channels=3) if gray[i] else image  # noqa: E731
    torch.testing.assert_close(out, expected(images, 3, reference), **TIGHT)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels", [1, 3])
def test_gaussian_blur_matches_torchvision(device, channels):
    size = 64
    kernel = blur_kernel_size(size)
    images = torch.rand(6, channels, size, size, device=device)
    blur = torch.tensor([True, True, False, True, True, False])
    sigma = torch.tensor([0.1, 0.5, 1.0, 1.3, 2.0, 0.7])
    aug = plain(size, channels, blur_p=0.5)

    def reference(i, image):
        return TF.gaussian_blur(image, [kernel, kernel], [sigma[i].item()] * 2) if blur[i] else image

    # cuDNN convolutions round float32 to TF32 by default, both ours and torchvision's.
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        out = aug.apply(images, params_for(aug, images, blur=blur, sigma=sigma))
        torch.testing.assert_close(out, expected(images, channels, reference), **TIGHT)


def test_solarize_matches_torchvision():
    images = torch.rand(6, 3, 12, 12)
    solarize = torch.tensor([True, False] * 3)
    aug = plain(12, 3, solarize_p=0.5)
    out = aug.apply(images, params_for(aug, images, solarize=solarize))
    reference = lambda i, image: TF.solarize(image, 0.5) if solarize[i] else image  # noqa: E731
    torch.testing.assert_close(out, expected(images, 3, reference), **TIGHT)
    # On uint8 images the 0.5 threshold is the per-image recipe's 128.
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(2, 3, 16, 16)
    aug = plain(16, 3, solarize_p=0.5)
    out = aug.apply(pixels, params_for(aug, pixels, solarize=torch.tensor([True, True])))
    torch.testing.assert_close(out[0], TF.normalize(TF.solarize(pixels[0], 128) / 255, MEAN[3], STD[3]), **TIGHT)


# --- recipes: one description, two pipelines ----------------------------------------------

SHAPES = [(28, 1), (32, 1), (32, 3), (64, 1), (96, 3), (224, 3)]  # digits, small and large images


def named_recipes() -> dict[str, ViewRecipe]:
    """Every named recipe for the shapes above, by a readable label."""
    named = {}
    for size, channels in SHAPES:
        shape = f"{size}px-{channels}ch"
        for method in RECIPES:
            for strength in (0.5, 1.0):
                for i, recipe in enumerate(method_recipes(method, size, channels, strength)):
                    named[f"{method}-s{strength}-view{i}-{shape}"] = recipe
        named[f"classifier-{shape}"] = classifier_recipe(size, channels)
        named[f"plain-{shape}"] = plain_recipe(size, channels)
    return named


NAMED = named_recipes()


# The parameters of each v2 step, as the step stores them.
STEP_PARAMS = {
    "RandomResizedCrop": lambda t: (tuple(t.size), tuple(t.scale), tuple(t.ratio), t.antialias),
    "RandomHorizontalFlip": lambda t: t.p,
    "ColorJitter": lambda t: (t.brightness, t.contrast, t.saturation, t.hue),
    "RandomGrayscale": lambda t: t.p,
    "GaussianBlur": lambda t: (tuple(t.kernel_size), tuple(t.sigma)),
    "RandomSolarize": lambda t: (t.threshold, t.p),
    "ToDtype": lambda t: (t.dtype, t.scale),
    "Normalize": lambda t: (tuple(t.mean), tuple(t.std)),
}


def steps(pipeline: v2.Compose) -> list[tuple]:
    """Each step of a v2 pipeline as (name, probability of RandomApply, parameters)."""
    out = []
    for step in pipeline.transforms:
        p = 1.0
        if isinstance(step, v2.RandomApply):
            (step,), p = step.transforms, step.p
        out.append((type(step).__name__, p, STEP_PARAMS[type(step).__name__](step)))
    return out


def recipe_steps(r: ViewRecipe) -> list[tuple]:
    """The steps a recipe describes, in its order; a step with probability 0 is absent."""
    out = [("RandomResizedCrop", 1.0, ((r.size, r.size), (r.min_scale, r.max_scale), RATIO, True))]
    if r.flip:
        out.append(("RandomHorizontalFlip", 1.0, 0.5))
    if r.jitter is not None and r.jitter_p > 0:
        # ColorJitter keeps the factor ranges (max(0, 1 - s), 1 + s) and (-h, h); None for a zero strength.
        ranges = tuple(None if s == 0 else (max(0.0, 1 - s), 1 + s) for s in r.jitter[:3])
        ranges += (None if r.jitter[3] == 0 else (-r.jitter[3], r.jitter[3]),)
        out.append(("ColorJitter", r.jitter_p, ranges))
    if r.gray_p > 0:
        out.append(("RandomGrayscale", 1.0, r.gray_p))
    if r.blur_p > 0:
        out.append(("GaussianBlur", r.blur_p, ((blur_kernel_size(r.size),) * 2, (0.1, 2.0))))
    if r.solarize_p > 0:
        out.append(("RandomSolarize", 1.0, (128, r.solarize_p)))
    return out + [("ToDtype", 1.0, (torch.float32, True)), ("Normalize", 1.0, (MEAN[r.channels], STD[r.channels]))]


@pytest.mark.parametrize("label", NAMED)
def test_per_image_pipeline_is_the_recipe(label):
    recipe = NAMED[label]
    assert steps(recipe.per_image()) == recipe_steps(recipe)


@pytest.mark.parametrize("label", NAMED)
def test_batch_draws_with_the_recipes_probabilities_and_ranges(label):
    recipe = NAMED[label]
    aug = BatchAugment(recipe)
    assert aug.recipe is recipe
    n, size = 4000, recipe.size
    params = aug.sample_params(n, size, size, "cpu", torch.Generator().manual_seed(0))
    jitter = recipe.jitter or (0.0, 0.0, 0.0, 0.0)
    rates = dict(flip=0.5 if recipe.flip else 0.0, jitter=recipe.jitter_p if recipe.jitter else 0.0,
                 gray=recipe.gray_p, blur=recipe.blur_p, solarize=recipe.solarize_p)
    for key, rate in rates.items():
        drawn = params[key].float().mean().item()
        if rate in (0.0, 1.0):
            assert drawn == rate, key  # a step that is off, or always on, is exactly that
        else:
            assert abs(drawn - rate) < 0.04, key  # 5 standard errors of a rate over 4000 draws
    low = torch.tensor([max(0.0, 1 - s) for s in jitter[:3]] + [-jitter[3]])
    high = torch.tensor([1 + s for s in jitter[:3]] + [jitter[3]])
    assert ((params["factors"] >= low - 1e-6) & (params["factors"] <= high + 1e-6)).all()
    h, w = params["box"][:, 2].double(), params["box"][:, 3].double()
    assert ((h + 0.5) * (w + 0.5) >= recipe.min_scale * size * size).all()


def test_named_recipes_hold_the_papers_values():
    views = batch_method_views("simclr", 96, 3, strength=0.5)
    assert [view.recipe for view in views] == method_recipes("simclr", 96, 3, 0.5)
    assert len(views) == 2 and views[0] == views[1]
    simclr = views[0].recipe
    assert simclr.jitter == pytest.approx((0.4, 0.4, 0.4, 0.1)) and simclr.jitter_p == 0.8
    assert (simclr.min_scale, simclr.flip, simclr.gray_p, simclr.blur_p, simclr.solarize_p) == (0.08, True, 0.2, 0.5, 0)

    digits = method_recipes("simclr", 28, 1)[0]
    assert digits.jitter == pytest.approx((0.8, 0.8, 0.0, 0.0))
    assert (digits.min_scale, digits.flip, digits.gray_p, digits.blur_p) == (0.25, False, 0.0, 0.0)

    moco = method_recipes("moco", 32, 3)[0]
    assert moco.jitter == pytest.approx((0.4, 0.4, 0.4, 0.1)) and moco.min_scale == 0.2
    assert moco.blur_p == 0  # below BLUR_MIN_SIZE
    assert method_recipes("moco", BLUR_MIN_SIZE - 1, 3)[0].blur_p == 0
    assert method_recipes("moco", BLUR_MIN_SIZE, 3)[0].blur_p == 0.5
    assert method_recipes("moco", 32, 3, 0.5) == method_recipes("moco", 32, 3, 1.0)  # the paper's fixed strengths

    first, second = method_recipes("byol", 64, 3)
    assert first.jitter == pytest.approx((0.4, 0.4, 0.2, 0.1)) and first.gray_p == 0.2
    assert (first.blur_p, first.solarize_p, second.blur_p, second.solarize_p) == (1.0, 0.0, 0.1, 0.2)

    assert (classifier_recipe(28, 1).min_scale, classifier_recipe(28, 1).flip) == (0.5, False)
    assert (classifier_recipe(32, 3).min_scale, classifier_recipe(32, 3).flip) == (0.5, True)
    for recipe in (classifier_recipe(32, 3), plain_recipe(32, 3)):
        assert recipe.jitter is None and recipe.gray_p == recipe.blur_p == recipe.solarize_p == 0
    assert (plain_recipe(32, 3).min_scale, plain_recipe(32, 3).flip) == (1.0, False)

    with pytest.raises(ValueError):
        method_recipes("swav", 32, 3)
    with pytest.raises(ValueError):
        batch_method_views("swav", 32, 3)


def papers_pipelines() -> dict[tuple, list[v2.Compose]]:
    """The published recipes written out as v2 pipelines, by (method, size, channels, strength)."""
    def to_float(channels):
        return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN[channels], STD[channels])]

    def blur(kernel, p):
        return v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=p)

    def crop(size, low):
        return v2.RandomResizedCrop(size, scale=(low, 1.0), antialias=True)

    jitter = v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8)
    return {
        # SimCLR appendix A at s = 0.5 on 96 px colour images; the kernel is 10% of 96, odd.
        ("simclr", 96, 3, 0.5): [v2.Compose(
            [crop(96, 0.08), v2.RandomHorizontalFlip(), v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
             v2.RandomGrayscale(p=0.2), blur(9, 0.5)] + to_float(3))] * 2,
        # 28 px digits: crop 0.25-1, no flip, brightness and contrast only, no blur.
        ("simclr", 28, 1, 1.0): [v2.Compose(
            [crop(28, 0.25), v2.RandomApply([v2.ColorJitter(0.8, 0.8)], p=0.8)] + to_float(1))] * 2,
        # MoCo v2 aug+ on 32 px colour images: no blur below BLUR_MIN_SIZE.
        ("moco", 32, 3, 1.0): [v2.Compose(
            [crop(32, 0.2), v2.RandomHorizontalFlip(), v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
             v2.RandomGrayscale(p=0.2)] + to_float(3))] * 2,
        # BYOL table 6 at 64 px: blur 1.0 / 0.1, solarize 0 / 0.2.
        ("byol", 64, 3, 1.0): [
            v2.Compose([crop(64, 0.08), v2.RandomHorizontalFlip(), jitter, v2.RandomGrayscale(p=0.2), blur(7, 1.0)]
                       + to_float(3)),
            v2.Compose([crop(64, 0.08), v2.RandomHorizontalFlip(), jitter, v2.RandomGrayscale(p=0.2), blur(7, 0.1),
                        v2.RandomSolarize(threshold=128, p=0.2)] + to_float(3))],
    }


@pytest.mark.parametrize("key", list(papers_pipelines()))
def test_per_image_views_are_the_papers_pipelines(key):
    # The same steps with the same parameters draw the same random numbers: equal outputs.
    method, size, channels, strength = key
    reference = papers_pipelines()[key]
    views = method_views(method, size, channels, strength)
    images = torch.randint(0, 256, (4, channels, size + 8, size + 4), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    ours = [views(image) for image in images]
    torch.manual_seed(1)
    theirs = [[t(image) for t in reference] for image in images]
    for a, b in zip(ours, theirs):
        assert len(a) == len(b) == 2 and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("size", [64, 96, 224])
def test_blur_kernel_is_the_recipes(size):
    assert blur_kernel_size(size) == {64: 7, 96: 9, 224: 23}[size]  # 10% of the side, odd
    for recipe in method_recipes("simclr", size, 3) + method_recipes("byol", size, 3):
        (gaussian,) = [step.transforms[0] for step in recipe.per_image().transforms
                       if isinstance(step, v2.RandomApply) and isinstance(step.transforms[0], v2.GaussianBlur)]
        assert tuple(gaussian.kernel_size) == (blur_kernel_size(size),) * 2


GOOD_COLOUR = ViewRecipe(32, 3, min_scale=0.08, flip=True, jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8, gray_p=0.2,
                         blur_p=0.5, solarize_p=0.2)


@pytest.mark.parametrize("base, changes", [
    (GOOD_COLOUR, dict(jitter_p=1.5)),  # probabilities out of range
    (GOOD_COLOUR, dict(gray_p=-0.1)),
    (GOOD_COLOUR, dict(blur_p=2.0)),
    (GOOD_COLOUR, dict(solarize_p=1.01)),
    (GOOD_COLOUR, dict(jitter=(0.4, 0.4, 0.4, 0.6))),  # hue > 0.5: more than half the colour circle
    (GOOD_COLOUR, dict(jitter=(0.4, -0.1, 0.4, 0.1))),
    (GOOD_COLOUR, dict(jitter=(0.4, 0.4, 0.4))),
    (GOOD_COLOUR, dict(min_scale=0.0)),
    (GOOD_COLOUR, dict(min_scale=1.5)),
    (GOOD_COLOUR, dict(channels=2)),
    (plain_recipe(28, 1), dict(jitter=(0.4, 0.4, 0.4, 0.0), jitter_p=0.8)),  # saturation on one channel
    (plain_recipe(28, 1), dict(jitter=(0.4, 0.4, 0.0, 0.1), jitter_p=0.8)),  # hue on one channel
    (plain_recipe(28, 1), dict(gray_p=0.2)),  # grayscale on one channel
])
def test_bad_recipes_are_errors(base, changes):
    with pytest.raises(ValueError):
        replace(base, **changes)


def test_images_of_the_wrong_shape_are_errors():
    with pytest.raises(ValueError):
        plain(28, 3)(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))


@pytest.mark.parametrize("method, size, channels, view", [("simclr", 32, 3, 0), ("simclr", 28, 1, 0),
                                                           ("byol", 64, 3, 1)])
def test_whole_recipe_matches_the_per_image_pipeline_in_distribution(method, size, channels, view):
    # One smooth image, 800 views from each path of one recipe. The per-sample mean and
    # spread of each channel summarise crop, jitter, grayscale, blur, solarize and
    # normalisation together.
    ramp = torch.linspace(0, 1, size)
    image = torch.stack([ramp.view(1, -1).expand(size, size), ramp.view(-1, 1).expand(size, size),
                         (ramp.view(1, -1) - ramp.view(-1, 1)).abs()])[:channels]
    image = (image * 255).round().to(torch.uint8)
    recipe = method_recipes(method, size, channels)[view]
    n = 800
    torch.manual_seed(0)
    per_image_view = recipe.per_image()
    per_image = torch.stack([per_image_view(image) for _ in range(n)])
    batch = BatchAugment(recipe)(image.expand(n, channels, size, size), torch.Generator().manual_seed(0))
    for stat in (lambda x: x.mean(dim=(2, 3)), lambda x: x.std(dim=(2, 3))):
        ours, theirs = stat(batch), stat(per_image)  # (n, channels)
        # Means over 800 samples; the spread of the per-sample statistic sets the scale.
        scale = theirs.std(dim=0)
        assert ((ours.mean(dim=0) - theirs.mean(dim=0)).abs() < 0.25 * scale).all()
        assert ((ours.std(dim=0) / scale - 1).abs() < 0.15).all()


# --- the warp (affine + elastic), for handwriting ----------------------------------------------

def _strokes(n=2, size=28):
    x = torch.zeros(n, 1, size, size)
    x[..., 8:20, 10:14] = 1
    x[..., 8:11, 10:22] = 0.6
    return x


@pytest.mark.parametrize("angle, dx, dy, scale, shear", [(20.0, 3.0, -2.0, 1.1, 0.0), (-12.0, 0.0, 1.0, 0.85, 9.0),
                                                         (0.0, -2.0, 0.0, 1.0, -15.0)])
def test_warp_affine_is_torchvision_affine(angle, dx, dy, scale, shear):
    from contrastive.image.batch_augment import warp

    x = _strokes()
    ours = warp(x, torch.tensor([[angle, dx, dy, scale, shear]] * 2), None, 0.0, 1.0)
    theirs = TF.affine(x, angle=angle, translate=[int(dx), int(dy)], scale=scale, shear=[shear, 0.0],
                       interpolation=TF.InterpolationMode.BILINEAR)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_warp_elastic_is_torchvision_elastic_with_the_same_noise():
    from contrastive.image.batch_augment import gaussian_blur, warp

    x, alpha, sigma = _strokes(1), 34.0, 4.0
    noise = torch.rand(1, 2, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ours = warp(x, torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0]]), noise, alpha, sigma)
    # ElasticTransform's make_params: blur each axis' noise with kernel int(8 sigma + 1) (odd), times alpha / side.
    blurred = gaussian_blur(noise, torch.tensor([sigma]), 33)
    displacement = (blurred * alpha / 28).permute(0, 2, 3, 1)  # (1, H, W, 2)
    theirs = TF.elastic(x, displacement, interpolation=TF.InterpolationMode.BILINEAR)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert (ours - x).abs().max() > 0.1  # it moved the strokes


def test_warp_params_follow_random_affine_ranges():
    from contrastive.image.augment import Warp

    w = Warp(15.0, 0.1, (0.8, 1.1), 10.0, 34.0, 4.0)
    recipe = ViewRecipe(28, 1, min_scale=1.0, flip=False, jitter=None, jitter_p=0, gray_p=0, blur_p=0,
                        solarize_p=0, warp=w)
    p = BatchAugment(recipe).sample_params(4000, 28, 28, torch.device("cpu"), torch.Generator().manual_seed(0))
    angle, dx, dy, scale, shear = p["warp"].unbind(1)
    assert angle.abs().max() <= 15 and angle.abs().max() > 14 and abs(angle.mean()) < 0.5
    assert set(dx.unique().tolist()) == {-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0}  # round(U(-2.8, 2.8))
    assert dy.abs().max() == 3 and (dx == dx.round()).all()
    assert scale.min() >= 0.8 and scale.max() <= 1.1 and shear.abs().max() <= 10
    assert p["noise"].shape == (4000, 2, 28, 28) and p["noise"].abs().max() <= 1
    # The per-image path is torchvision's own RandomAffine + ElasticTransform with the same numbers.
    names = [type(op).__name__ for op in recipe.per_image().transforms]
    assert names[:3] == ["RandomResizedCrop", "RandomAffine", "ElasticTransform"]
    affine = recipe.per_image().transforms[1]
    assert (affine.degrees, affine.translate, affine.scale, affine.shear) == ([-15.0, 15.0], (0.1, 0.1), (0.8, 1.1),
                                                                             [-10.0, 10.0])


def test_batched_crops_stay_within_the_local_range():
    local = method_recipes("multicrop", 32, 3)[2]
    aug = BatchAugment(local)
    box = aug.sample_params(4000, 32, 32, "cpu", torch.Generator().manual_seed(0))["box"].double()
    area = box[:, 2] * box[:, 3] / (32 * 32)
    assert area.max() <= 0.4 + 0.05 and area.min() >= 0.05 - 0.02  # rounding of the box to whole pixels
    assert area.mean() < 0.3  # the bound is used (the whole-image range would average ~0.52)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    assert aug(images).shape == (5, 3, 16, 16)
    with pytest.raises(ValueError, match="max_scale"):
        dataclasses.replace(local, max_scale=0.01)
