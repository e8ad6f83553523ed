import io
import os
import pickle

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from contrastive.batches import Transformed
from contrastive.errors import ContrastiveError
from contrastive.image.data import ImageSet, decode_image, load_data
from contrastive.subsets import balanced_subset


@pytest.fixture(scope="module")
def mnist():
    return load_data()


def save(path, image, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, **kwargs)
    return str(path)


def gray(size=8, value=100):
    return Image.fromarray(np.full((size, size), value, dtype=np.uint8), "L")


def rgb(size=8, color=(200, 40, 10)):
    return Image.fromarray(np.tile(np.array(color, dtype=np.uint8), (size, size, 1)), "RGB")


def sixteen_bit(size=8):
    """Left half 65535, right half 32768, as a 16-bit grayscale PNG."""
    array = np.full((size, size), 32768, dtype=np.uint16)
    array[:, : size // 2] = 65535
    return Image.fromarray(array)


def jpeg_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def assert_one_line_error(excinfo, *fragments):
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def make_labeled(root, mixed_sizes=False):
    """cat: L, RGBA and palette PNGs; dog: a 16-bit PNG and an RGB JPEG; 8x8 unless mixed."""
    palette = rgb(color=(0, 128, 255)).convert("P", palette=Image.Palette.ADAPTIVE)
    for split in ("train", "test"):
        save(root / split / "cat" / "a_gray.png", gray())
        save(root / split / "cat" / "b_rgba.png", Image.new("RGBA", (8, 8), (10, 20, 30, 0)))
        save(root / split / "cat" / "c_palette.png", palette)
        save(root / split / "dog" / "a_16bit.png", sixteen_bit())
        save(root / split / "dog" / "b_photo.jpg", rgb(12 if mixed_sizes else 8), quality=95)
    return root


# --- embedded MNIST -------------------------------------------------------------------------

def test_mnist_shapes_dtypes_and_balance(mnist):
    assert (mnist.name, mnist.num_classes, mnist.channels, mnist.image_size) == ("mnist", 10, 1, 28)
    assert mnist.classes == [str(c) for c in range(10)]
    assert mnist.train.images.shape == (4000, 1, 28, 28) and mnist.train.images.dtype == torch.uint8
    assert mnist.test.images.shape == (1000, 1, 28, 28) and mnist.test.images.dtype == torch.uint8
    assert torch.equal(torch.bincount(mnist.train.labels), torch.full((10,), 400))
    assert torch.equal(torch.bincount(mnist.test.labels), torch.full((10,), 100))
    assert mnist.train.images.max() == 255 and mnist.train.images.float().mean() > 10  # real strokes
    image, label = mnist.train[0]
    assert image.shape == (1, 28, 28) and isinstance(label, int)


def test_mnist_split_is_fixed_whatever_the_seed(mnist):
    # load_data has no seed argument any more: the split must not follow the global random streams either.
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        np.random.seed(123)
        other = load_data("mnist")
    np.random.set_state(numpy_state)
    assert torch.equal(mnist.train.images, other.train.images)
    assert torch.equal(mnist.test.images, other.test.images)
    assert torch.equal(mnist.test.labels, other.test.labels)


def test_mnist_train_and_test_are_disjoint(mnist):
    train = {image.numpy().tobytes() for image in mnist.train.images}
    test = {image.numpy().tobytes() for image in mnist.test.images}
    assert len(train) == 4000 and len(test) == 1000 and not train & test


def test_mnist_as_three_channels(mnist):
    colour = load_data(channels=3)
    assert colour.channels == 3 and colour.train.images.shape == (4000, 3, 28, 28)
    assert torch.equal(colour.train.images, mnist.train.images.expand(-1, 3, -1, -1))


# --- folders --------------------------------------------------------------------------------

def test_labeled_folder_decodes_every_mode_to_rgb_and_caches(tmp_path):
    data = load_data(f"folder:{make_labeled(tmp_path)}")
    assert data.name == f"folder:{tmp_path}" and data.classes == ["cat", "dog"] and data.num_classes == 2
    assert (data.channels, data.image_size, data.skipped) == (3, 8, 0)
    for split in (data.train, data.test):
        assert split.images.shape == (5, 3, 8, 8) and split.images.dtype == torch.uint8
        assert split.labels.tolist() == [0, 0, 0, 1, 1]
        assert [os.path.basename(os.path.dirname(p)) for p in split.paths] == ["cat"] * 3 + ["dog"] * 2
    by_name = {os.path.basename(p): data.train.images[i] for i, p in enumerate(data.train.paths)}
    assert (by_name["a_gray.png"] == 100).all()
    assert (by_name["b_rgba.png"][:, 0, 0].tolist()) == [10, 20, 30]
    assert by_name["c_palette.png"][:, 0, 0].tolist() == [0, 128, 255]
    assert (by_name["a_16bit.png"][:, :, :4] == 255).all() and (by_name["a_16bit.png"][:, :, 4:] == 128).all()
    assert (by_name["b_photo.jpg"][0].float().mean() - 200).abs() < 8  # JPEG is lossy


def test_labeled_folder_as_grayscale(tmp_path):
    data = load_data(f"folder:{make_labeled(tmp_path)}", channels=1)
    assert data.channels == 1 and data.train.images.shape == (5, 1, 8, 8)
    assert data.train.images[3, 0, 0, 0] == 255  # 16-bit white stays white


def test_mixed_sizes_stay_lazy_and_decode_per_item(tmp_path):
    data = load_data(f"folder:{make_labeled(tmp_path, mixed_sizes=True)}")
    assert data.train.images is None and len(data.train.paths) == 5
    shapes = [tuple(data.train[i][0].shape) for i in range(len(data.train))]
    assert shapes == [(3, 8, 8)] * 4 + [(3, 12, 12)]
    assert [data.train[i][1] for i in range(5)] == [0, 0, 0, 1, 1]
    assert data.image_size == 8  # the first image's side


def test_flat_folder_is_unlabeled_and_recursive(tmp_path):
    save(tmp_path / "one.PNG", gray())
    save(tmp_path / "nested" / "deeper" / "two.jpeg", rgb(), quality=95)
    (tmp_path / "notes.txt").write_text("not an image")
    save(tmp_path / ".hidden" / "three.png", gray())
    data = load_data(f"folder:{tmp_path}")
    assert data.test is None and data.num_classes == 0 and data.classes == []
    assert len(data.train) == 2 and not data.train.has_labels
    assert [data.train[i][1] for i in range(2)] == [-1, -1]
    assert data.train[0][0].shape == (3, 8, 8)


# --- errors ---------------------------------------------------------------------------------

def test_missing_path_and_unknown_spec(tmp_path):
    with pytest.raises(ContrastiveError) as excinfo:
        load_data(f"folder:{tmp_path / 'nowhere'}")
    assert_one_line_error(excinfo, "nowhere", "does not exist")
    with pytest.raises(ContrastiveError) as excinfo:
        load_data("imagenet")
    assert_one_line_error(excinfo, "omit --data", "folder:DIR", "cifar10:DIR", "cifar100:DIR")
    with pytest.raises(ContrastiveError):
        load_data("folder:")


def test_folder_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(ContrastiveError) as excinfo:
        load_data(f"folder:{tmp_path}")
    assert_one_line_error(excinfo, "no images", ".jpg", str(tmp_path))


def test_labeled_layout_errors(tmp_path):
    save(tmp_path / "train" / "cat" / "a.png", gray())
    with pytest.raises(ContrastiveError) as excinfo:
        load_data(f"folder:{tmp_path}")
    assert_one_line_error(excinfo, "test", "DIR/test/<class>")
    save(tmp_path / "test" / "dog" / "a.png", gray())
    with pytest.raises(ContrastiveError) as excinfo:
        load_data(f"folder:{tmp_path}")
    assert_one_line_error(excinfo, "cat", "dog", "same class folders")
    save(tmp_path / "test" / "cat" / "a.png", gray())
    os.makedirs(tmp_path / "train" / "dog")
    with pytest.raises(ContrastiveError) as excinfo:
        load_data(f"folder:{tmp_path}")
    assert_one_line_error(excinfo, str(tmp_path / "train" / "dog"), "no images")


BAD_FILES = {
    "empty.jpg": lambda: b"",
    "cut.jpg": lambda: jpeg_bytes(rgb(32))[: len(jpeg_bytes(rgb(32))) // 2],
    "text.png": lambda: b"this is not a picture\n",
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
@pytest.mark.parametrize("labeled", [False, True])
def test_bad_image_is_named_or_skipped(tmp_path, name, labeled):
    folder = tmp_path / "train" / "cat" if labeled else tmp_path
    for i in range(2):
        save(folder / f"good{i}.jpg", rgb(32), quality=95)
    (folder / name).write_bytes(BAD_FILES[name]())
    if labeled:
        save(tmp_path / "test" / "cat" / "good.jpg", rgb(32), quality=95)
    with pytest.raises(ContrastiveError) as excinfo:
        load_data(f"folder:{tmp_path}")
    assert_one_line_error(excinfo, name, "--skip-bad-images")
    data = load_data(f"folder:{tmp_path}", skip_bad=True)
    assert data.skipped == 1 and len(data.train) == 2 and data.train.images.shape == (2, 3, 32, 32)
    assert all(os.path.basename(p).startswith("good") for p in data.train.paths)


def test_lazy_folder_checks_files_at_load(tmp_path):
    save(tmp_path / "small.png", gray(8))
    save(tmp_path / "large.png", gray(16))
    (tmp_path / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    with pytest.raises(ContrastiveError) as excinfo:
        load_data(f"folder:{tmp_path}")
    assert_one_line_error(excinfo, "fake.png", "--skip-bad-images")
    data = load_data(f"folder:{tmp_path}", skip_bad=True)
    assert data.skipped == 1 and data.train.images is None and len(data.train) == 2


def test_all_images_bad(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(ContrastiveError) as excinfo:
        load_data(f"folder:{tmp_path}", skip_bad=True)
    assert_one_line_error(excinfo, "no readable images")


def test_decode_image_of_missing_file_names_it(tmp_path):
    with pytest.raises(ContrastiveError) as excinfo:
        decode_image(tmp_path / "ghost.png")
    assert_one_line_error(excinfo, "ghost.png")


def test_cifar_without_files_is_a_clear_error(tmp_path):
    for spec in (f"cifar10:{tmp_path}", f"cifar100:{tmp_path}"):
        with pytest.raises(ContrastiveError) as excinfo:
            load_data(spec)
        assert_one_line_error(excinfo, str(tmp_path), "nothing is downloaded")
    assert not os.listdir(tmp_path)  # and indeed nothing was
    with pytest.raises(ContrastiveError):
        load_data(f"cifar10:{tmp_path / 'absent'}")


# --- balanced_subset ------------------------------------------------------------------------

def test_balanced_subset_counts_order_and_seed():
    labels = torch.arange(3).repeat_interleave(torch.tensor([400, 100, 7]))
    picked = balanced_subset(labels, 0.1, seed=5)
    assert picked.dtype == torch.int64 and torch.equal(picked, torch.sort(picked).values)
    assert torch.bincount(labels[picked]).tolist() == [40, 10, 1]  # round(0.7) = 1
    assert torch.equal(picked, balanced_subset(labels, 0.1, seed=5))
    assert not torch.equal(picked, balanced_subset(labels, 0.1, seed=6))
    assert torch.bincount(labels[balanced_subset(labels, 0.01, seed=5)]).tolist() == [4, 1, 1]  # at least 1
    assert torch.equal(balanced_subset(labels, 1.0, seed=5), torch.arange(len(labels)))


def test_balanced_subset_smaller_fraction_is_nested(mnist):
    one = set(balanced_subset(mnist.train.labels, 0.01, seed=0).tolist())
    ten = set(balanced_subset(mnist.train.labels, 0.1, seed=0).tolist())
    assert len(one) == 40 and len(ten) == 400 and one <= ten


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, float("nan")])
def test_balanced_subset_rejects_bad_fraction(fraction):
    with pytest.raises(ContrastiveError) as excinfo:
        balanced_subset(torch.zeros(10, dtype=torch.int64), fraction, seed=0)
    assert_one_line_error(excinfo, "label fraction must be in (0, 1]", str(fraction))


# --- ImageSet and Transformed ---------------------------------------------------------------

def test_subset_transformed_and_pickle(mnist, tmp_path):
    part = mnist.train.subset(torch.tensor([5, 0, 3999]))
    assert len(part) == 3 and torch.equal(part.images[0], mnist.train.images[5])
    assert part.labels.tolist() == mnist.train.labels[[5, 0, 3999]].tolist()
    views = Transformed(part, lambda image: (image.float() / 255, image.flip(-1)))
    (scaled, flipped), label = views[2]
    assert len(views) == 3 and label == int(mnist.train.labels[3999])
    assert torch.allclose(scaled * 255, mnist.train.images[3999].float())
    assert torch.equal(flipped, mnist.train.images[3999].flip(-1))
    restored = pickle.loads(pickle.dumps(part))
    assert torch.equal(restored.images, part.images) and torch.equal(restored.labels, part.labels)

    lazy = load_data(f"folder:{make_labeled(tmp_path, mixed_sizes=True)}").train
    lazy_part = lazy.subset([4, 0])
    assert lazy_part.paths == [lazy.paths[4], lazy.paths[0]] and lazy_part.labels.tolist() == [1, 0]
    restored = pickle.loads(pickle.dumps(lazy_part))
    assert restored.paths == lazy_part.paths and torch.equal(restored[0][0], lazy_part[0][0])


def test_in_memory_take_and_with_labels(mnist, tmp_path):
    train = mnist.train
    assert train.in_memory
    idx = torch.tensor([7, 2, 7])
    assert torch.equal(train.take(idx), train.images[idx])
    relabelled = train.with_labels(torch.zeros(len(train), dtype=torch.int64))
    assert relabelled.images is train.images  # shared, not copied
    assert relabelled.labels.tolist() == [0] * len(train) and train.labels.bincount().tolist() == [400] * 10
    assert relabelled[5][1] == 0 and torch.equal(relabelled[5][0], train[5][0])
    unlabelled = ImageSet(images=train.images).with_labels(None)
    assert not unlabelled.has_labels and unlabelled[0][1] == -1
    with pytest.raises(ValueError):
        train.with_labels(torch.zeros(3, dtype=torch.int64))

    lazy = load_data(f"folder:{make_labeled(tmp_path, mixed_sizes=True)}").train
    assert not lazy.in_memory
    lazy_relabelled = lazy.with_labels([1, 1, 1, 0, 0])
    assert lazy_relabelled.paths == lazy.paths and [lazy_relabelled[i][1] for i in range(5)] == [1, 1, 1, 0, 0]


# --- fuzzing the decoder --------------------------------------------------------------------

@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=512), suffix=st.sampled_from([".png", ".jpg"]),
       prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0"]))
def test_decode_random_bytes_never_crashes(tmp_path, data, suffix, prefix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(prefix + data)
    try:
        image = decode_image(path)
    except ContrastiveError as e:
        assert "\n" not in str(e) and "fuzz" in str(e)
    else:
        assert image.dtype == torch.uint8 and image.dim() == 3 and image.shape[0] == 3


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=st.integers(1, 40), height=st.integers(1, 40),
       mode=st.sampled_from(["L", "RGB", "RGBA", "P", "I;16"]), seed=st.integers(0, 2**16))
def test_decode_valid_images_of_any_mode(tmp_path, width, height, mode, seed):
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        array = rng.integers(0, 65536, (height, width), dtype=np.uint16)
        image, expected = Image.fromarray(array), np.repeat((array >> 8)[None], 3, axis=0)
    elif mode in ("L", "RGB", "RGBA"):
        shape = (height, width) if mode == "L" else (height, width, len(mode))
        array = rng.integers(0, 256, shape, dtype=np.uint8)
        image = Image.fromarray(array, mode)
        expected = np.repeat(array[None], 3, axis=0) if mode == "L" else array[:, :, :3].transpose(2, 0, 1)
    else:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).quantize(16)
        expected = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
    path = save(tmp_path / "valid.png", image)
    decoded = decode_image(path)
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, height, width)
    assert np.array_equal(decoded.numpy(), expected)


def test_a_folder_of_grayscale_images_is_read_with_one_channel(tmp_path):
    from PIL import Image

    from contrastive.image.data import folder_channels, load_data

    for split in ("train", "test"):
        for c in ("a", "b"):
            d = tmp_path / "gray" / split / c
            d.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8), mode="L").save(d / f"{i}.png")
                rgb = np.zeros((8, 8, 3), dtype=np.uint8)
                rgb[..., 0] = 200  # red: colour
                (tmp_path / "colour" / split / c).mkdir(parents=True, exist_ok=True)
                Image.fromarray(rgb).save(tmp_path / "colour" / split / c / f"{i}.png")
    # a gray image saved as RGB (R = G = B) still counts as gray
    Image.fromarray(np.full((8, 8, 3), 90, dtype=np.uint8)).save(tmp_path / "gray" / "train" / "a" / "rgb.png")
    assert folder_channels(str(tmp_path / "gray")) == 1 and folder_channels(str(tmp_path / "colour")) == 3
    data = load_data(f"folder:{tmp_path / 'gray'}")
    assert data.channels == 1 and data.train.images.shape[1] == 1
    assert load_data(f"folder:{tmp_path / 'colour'}").channels == 3
    assert load_data(f"folder:{tmp_path / 'gray'}", channels=3).channels == 3  # an explicit choice wins


def test_defaults_follow_the_data_small_gray_images_get_the_grid_cnn_and_handwriting_views():
    from contrastive.image import IMAGE
    from contrastive.image.augment import view_style

    class Data:
        name, channels, image_size = "folder:/x", 1, 28

    assert IMAGE.default_backbone(Data(), "cpu") == "small_cnn_grid"
    Data.channels, Data.image_size = 3, 32
    assert IMAGE.default_backbone(Data(), "cpu") == "small_cnn_grid"  # a ResNet-18 is 54 images/s on 2 cores
    assert IMAGE.default_backbone(Data(), "cuda") == "resnet18"
    Data.image_size = 96
    assert IMAGE.default_backbone(Data(), "cpu") == "resnet18"
    assert view_style("auto", 28, 1) == "handwriting" and view_style("auto", 32, 3) == "paper"
    assert view_style("auto", 64, 1) == "paper" and view_style("paper", 28, 1) == "paper"
