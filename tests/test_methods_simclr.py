"""SimCLR (contrastive/methods/simclr.py)."""

from helpers import fixed_views, small_method


def test_simclr_gradient_reaches_both_views():
    model = small_method("simclr")
    views = [v.clone().requires_grad_(True) for v in fixed_views()]
    loss, _ = model(views)
    loss.backward()
    assert views[0].grad.abs().sum() > 0 and views[1].grad.abs().sum() > 0
