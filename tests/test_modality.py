"""The modality contract (contrastive/modality.py, modality_base.py) and the image and code modalities
against it: the views a method asks for, made or refused in one line."""

from __future__ import annotations

import pytest
import torch

from contrastive.batches import ViewSpec
from contrastive.code import CODE
from contrastive.code.data import CodeSet
from contrastive.errors import ContrastiveError
from contrastive.image import IMAGE
from contrastive.methods import METHODS, view_spec
from contrastive.modality import MODALITIES, register
from contrastive.modality_base import Modality
from helpers import image_views, make_splits


# --- views: honoured or refused -----------------------------------------------------------------

def test_the_image_modality_makes_the_views_a_spec_asks_for():
    assert len(image_views(ViewSpec("simclr", 2))) == 2
    assert len(image_views(ViewSpec("simclr", 1))) == 1
    assert len(image_views(ViewSpec("light", 1))) == 1
    crops = image_views(ViewSpec("multicrop", 2, local_views=None))  # paper views: the default 6 local crops
    assert [tuple(v.shape[-2:]) for v in crops] == [(16, 16)] * 2 + [(8, 8)] * 6
    assert len(image_views(ViewSpec("multicrop", 2, local_views=3))) == 5


@pytest.mark.parametrize("spec, why", [
    (ViewSpec("sketch", 2, method="toy"), "no image recipe is called 'sketch'"),
    (ViewSpec("simclr", 2, local_views=2, method="toy"), "only the multicrop recipe has local crops"),
    (ViewSpec("simclr", 3, method="toy"), "the simclr recipe has 2 global views"),
])
def test_the_image_modality_refuses_views_it_has_no_recipe_for(spec, why):
    with pytest.raises(ContrastiveError, match=f"^toy needs .* which the image modality cannot make: {why}; "):
        image_views(spec)


def code_items(n=6, variants=2, length=10) -> CodeSet:
    g = torch.Generator().manual_seed(0)
    return CodeSet(torch.randint(5, 40, (n, variants, length), generator=g), labels=torch.arange(n) % 2)


@pytest.mark.parametrize("spec, count", [(ViewSpec("light", 1), 1), (ViewSpec("simclr", 2), 2),
                                         (ViewSpec("multicrop", 2, local_views=None), 2)])
def test_the_code_modality_makes_as_many_token_views_as_asked_and_no_local_ones(spec, count):
    items = code_items()
    views = CODE.pretrain_views(spec, items, {"vocab": [str(i) for i in range(40)]}, CODE.Options())
    batch = views.batched(items.take(torch.arange(4)), torch.Generator().manual_seed(0))
    assert len(batch) == count and len(views.per_item(items[0][0])) == count


def test_the_code_modality_refuses_local_views_naming_the_method():
    spec = ViewSpec("multicrop", 2, local_views=4, method="dino")
    with pytest.raises(ContrastiveError, match="^dino needs .* the code modality cannot make: source code has no "
                                               "local views; use a method without local views$"):
        CODE.pretrain_views(spec, code_items(), {"vocab": []}, CODE.Options())


def test_one_view_methods_get_one_view_on_code():
    for name in ("cpc", "infomax"):
        spec = view_spec(name, METHODS[name].Options())
        items = code_items()
        views = CODE.pretrain_views(spec, items, {"vocab": []}, CODE.Options())
        assert len(views.batched(items.take(torch.arange(2)), torch.Generator().manual_seed(0))) == 1


# --- modalities ----------------------------------------------------------------------------------

def test_every_registered_modality_is_a_modality_with_the_optional_members():
    for name, modality in MODALITIES.items():
        assert isinstance(modality, Modality) and modality.name == name
        assert isinstance(modality.baselines, dict) and isinstance(modality.draws, bool)
        assert callable(modality.colourings) and callable(modality.raw_vectors) and callable(modality.contact_sheet)
    assert CODE.raw_vectors(code_items()) is None  # the defaults of what a modality lacks
    assert Modality.colourings(IMAGE, make_splits().test) == {}
    assert make_splits().positive_class is None  # images: no positive class; code: "vulnerable"'s index


def test_a_modality_missing_a_member_fails_when_it_is_made_not_in_a_run():
    required = Modality.__abstractmethods__
    assert {"name", "Options", "load", "resolve", "pretrain_views", "eval_views", "read_item"} <= required
    assert not {"raw_vectors", "colourings", "contact_sheet", "baselines", "prepare_model"} & required  # defaults
    # the image modality's members, all but one
    NoViews = type("NoViews", (Modality,), {n: vars(type(IMAGE))[n] for n in required - {"pretrain_views"}})

    class Half(Modality):
        name, noun, kind, specs, specs_help, backbones_help = "half", "items", "half data", "", "", ""
        load_options, Options = (), dict

    with pytest.raises(TypeError, match="abstract"):
        Half()
    with pytest.raises(TypeError, match="pretrain_views"):
        NoViews()
    with pytest.raises(TypeError, match="is not a Modality"):
        register(object())


def test_the_modalities_read_their_options_as_typed_or_as_an_instance():
    data = make_splits()
    resolved = IMAGE.resolve({"image_size": 12}, data)
    assert isinstance(resolved, IMAGE.Options) and resolved.image_size == 12
    assert IMAGE.resolve(resolved, data) == resolved
    with pytest.raises(ContrastiveError, match="--task is not an option of image data"):
        IMAGE.resolve({"task": "cwe"}, data)
    with pytest.raises(ContrastiveError, match="another kind of data"):
        CODE.resolve(resolved, data)


def test_local_crops_default_by_view_style_and_must_not_be_negative():
    from contrastive.errors import ContrastiveError
    from contrastive.image import IMAGE

    digits = make_splits()  # one channel, 16 px: handwriting views by default
    assert IMAGE.resolve({}, digits).local_crops == 0
    assert IMAGE.resolve({"views": "paper"}, digits).local_crops == 6
    assert IMAGE.resolve({}, make_splits(channels=3)).local_crops == 6  # colour images: the paper's views
    assert IMAGE.resolve({"local_crops": 3}, digits).local_crops == 3  # a given count wins
    with pytest.raises(ContrastiveError, match="--local-crops must be 0 or more"):
        IMAGE.resolve({"local_crops": -1}, digits)
