"""The view recipes (contrastive/image/augment.py): multi-crop."""

from __future__ import annotations

import pytest

from contrastive.image.augment import RECIPES, method_recipes


@pytest.mark.parametrize("size, channels, local, local_min", [(28, 1, 14, 0.25), (32, 3, 16, 0.05), (96, 3, 48, 0.05)])
def test_multicrop_recipe_two_global_then_local_crops(size, channels, local, local_min):
    recipes = method_recipes("multicrop", size, channels)
    assert len(recipes) == 2 + 6 and "multicrop" in RECIPES
    assert [(r.size, r.min_scale, r.max_scale) for r in recipes[:2]] == [(size, 0.4, 1.0)] * 2
    assert {(r.size, r.min_scale, r.max_scale) for r in recipes[2:]} == {(local, local_min, 0.4)}
    assert (recipes[0].blur_p, recipes[1].solarize_p) == ((1.0, 0.2) if size >= 64 else (0.0, 0.2))
    for r in recipes:  # the per-image path crops in the recipe's range
        assert tuple(r.per_image().transforms[0].scale) == (r.min_scale, r.max_scale)
