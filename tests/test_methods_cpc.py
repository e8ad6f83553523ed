"""CPC (contrastive/methods/cpc.py): the InfoNCE over offsets against a naive loop, the causal context,
the grid of windows, jitter and directions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contrastive.image.augment import RECIPES
from contrastive.losses import cpc_info_nce
from contrastive.methods import cpc
from helpers import D64, TokenEncoder, rand, tiny_encoder


@pytest.mark.parametrize("m, d", [(3, 4), (8, 8), (10, 2)])
def test_cpc_info_nce_matches_naive(m, d):
    p, z = rand(m, d), rand(m, d, seed=1)
    naive = sum(-(p[i] @ z[i] - torch.logsumexp(torch.stack([p[i] @ z[j] for j in range(m)]), 0))
                for i in range(m)) / m
    torch.testing.assert_close(cpc_info_nce(p, z), naive)


@pytest.mark.parametrize("a", [0.5, 2.0])
def test_cpc_info_nce_closed_form(a):
    m = 6
    z = a * torch.eye(m, dtype=D64)  # the prediction equals its target; targets orthogonal
    torch.testing.assert_close(cpc_info_nce(z, z), torch.tensor(math.log(1 + (m - 1) * math.exp(-a * a)), dtype=D64))


def test_cpc_context_is_causal_and_the_loss_is_the_mean_infonce_over_offsets():
    enc, d = tiny_encoder()
    model = cpc.build(cpc.Options(steps=2, context_hidden=8, context_layers=2), enc, d)
    model.eval()
    z = torch.randn(3, d, 5, 4)
    c = model.context(z)
    z2 = z.clone()
    z2[:, :, 3:] += 1.0  # change rows 3 and 4
    c2 = model.context(z2)
    torch.testing.assert_close(c2[:, :, :3], c[:, :, :3])  # rows 0..2 do not see rows below
    assert not torch.allclose(c2[:, :, 3], c[:, :, 3])

    x = torch.randn(4, 1, 16, 16)  # a 4 x 4 map
    with torch.no_grad():
        z = enc.local_features(x)
        c = model.context(z)
        losses = []
        for k in (1, 2):
            p = model.predict[k - 1](c[:, :, :-k]).permute(0, 2, 3, 1).reshape(-1, d)
            t = z[:, :, k:].permute(0, 2, 3, 1).reshape(-1, d)
            losses.append(cpc_info_nce(p, t))
        torch.testing.assert_close(model([x])[0], sum(losses) / 2)


def test_cpc_on_token_sequences():
    model = cpc.build(cpc.Options(steps=3, context_hidden=8, context_layers=2, max_pairs=10), TokenEncoder(), 8)
    tokens = torch.randint(0, 11, (5, 12))
    assert model.latents(tokens).shape == (5, 8, 12, 1)  # a sequence is a grid of one column
    loss, _ = model([tokens])
    loss.backward()
    assert torch.isfinite(loss) and model.encoder.embed.weight.grad.abs().max() > 0
    assert all(w.weight.grad.abs().max() > 0 for w in model.predict)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(30):  # a sequence whose next tokens follow from the current one is learned
        tokens = (torch.randint(0, 11, (16, 1)) + torch.arange(12)) % 11
        loss, _ = model([tokens])
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.5


def test_cpc_windows_are_encoded_alone_in_grid_order():
    enc, d = tiny_encoder()
    enc.eval()
    model = cpc.build(cpc.Options(steps=2, context_hidden=8, context_layers=1, patch=4), enc, d)
    x = torch.randn(2, 1, 12, 12)
    z = model.latents(x)
    assert z.shape == (2, d, 5, 5)  # windows of 4 at stride 2 over 12
    torch.testing.assert_close(z[1, :, 3, 2], enc(x[1:2, :, 6:10, 4:8])[0])  # row 3, column 2: its own window
    y = x.clone()
    y[:, :, 8:] += 1.0  # the bottom rows only: the windows above them do not change
    torch.testing.assert_close(model.latents(y)[:, :, :3], z[:, :, :3])
    loss, _ = model([x])
    loss.backward()
    assert enc.features[0].weight.grad.abs().max() > 0


def test_cpc_jittered_windows_are_shifted_crops_of_the_edge_padded_image():
    x = torch.randn(3, 2, 12, 12)
    plain, rows, cols = cpc.cut_windows(x, 4)
    assert (rows, cols) == (5, 5)
    torch.testing.assert_close(plain[1 * 25 + 3 * 5 + 2], x[1, :, 6:10, 4:8])  # item 1, row 3, column 2
    tiles, rows_t, cols_t = cpc.cut_windows(x, 4, stride=4)  # windows that share no pixels
    assert (rows_t, cols_t) == (3, 3)
    torch.testing.assert_close(tiles[2 * 9 + 1 * 3 + 2], x[2, :, 4:8, 8:12])
    j = 2
    torch.manual_seed(0)
    moved, rows_j, cols_j = cpc.cut_windows(x, 4, jitter=j)
    assert moved.shape == plain.shape and (rows_j, cols_j) == (rows, cols)  # the grid is unchanged
    padded = F.pad(x, (j,) * 4, mode="replicate")
    offsets = []
    for m in range(len(moved)):
        i, r, c = m // 25, (m % 25) // 5, m % 5
        found = [(dy, dx) for dy in range(-j, j + 1) for dx in range(-j, j + 1)
                 if torch.equal(moved[m], padded[i, :, 2 * r + j + dy:2 * r + j + dy + 4, 2 * c + j + dx:2 * c + j + dx + 4])]
        assert found, f"window {m} is not a shifted crop"
        offsets.append(found[0])
    assert len(set(offsets)) > 10  # each window draws its own offset


def test_cpc_jitter_only_while_training():
    enc, d = tiny_encoder()
    model = cpc.build(cpc.Options(steps=2, context_hidden=8, context_layers=1, patch=4, jitter=2), enc, d)
    x = torch.randn(2, 1, 12, 12)
    model.eval()
    torch.testing.assert_close(model.latents(x), cpc.build(cpc.Options(patch=4), enc, d).eval().latents(x))
    model.train()
    assert not torch.allclose(model.latents(x), model.latents(x))  # fresh offsets each call


def test_cpc_directions_turn_the_grid_and_give_each_direction_its_predictors():
    enc, d = tiny_encoder()
    one = cpc.build(cpc.Options(steps=2, context_hidden=8, context_layers=1), enc, d)
    four = cpc.build(cpc.Options(steps=2, context_hidden=8, context_layers=1, directions=4), enc, d)
    assert len(one.predict) == 2 and len(four.predict) == 8
    assert set(one.state_dict()) <= set(four.state_dict())  # a one-direction checkpoint keeps its names
    four.eval()
    x = torch.randn(4, 1, 16, 16)  # a 4 x 4 map
    with torch.no_grad():
        z = enc.local_features(x)
        losses = []
        for direction, turns in enumerate((0, 1, 2, 3)):
            zr = torch.rot90(z, turns, dims=(2, 3))
            c = four.context(zr)
            for k in (1, 2):
                p = four.predict[direction * 2 + k - 1](c[:, :, :-k]).permute(0, 2, 3, 1).reshape(-1, d)
                t = zr[:, :, k:].permute(0, 2, 3, 1).reshape(-1, d)
                losses.append(cpc_info_nce(p, t))
        torch.testing.assert_close(four([x])[0], sum(losses) / 8)
        # bottom-up reads row 3 to predict row 2: the top-down half alone is not the same loss
        assert not torch.allclose(four([x])[0], sum(losses[:2]) / 2)
    seq = cpc.build(cpc.Options(steps=2, context_hidden=8, context_layers=1, directions=2), TokenEncoder(), 8)
    loss, _ = seq([torch.randint(0, 11, (4, 9))])
    assert torch.isfinite(loss)
    seq4 = cpc.build(cpc.Options(steps=2, context_hidden=8, context_layers=1, directions=4), TokenEncoder(), 8)
    with pytest.raises(ValueError, match="a sequence takes --directions 1 or 2"):
        seq4([torch.randint(0, 11, (4, 9))])


def test_cpc_cross_view_predicts_the_second_views_rows_from_the_first_views_context():
    from contrastive.methods import view_spec

    enc, d = tiny_encoder()
    model = cpc.build(cpc.Options(steps=2, context_hidden=8, context_layers=1, cross_view=True), enc, d)
    model.eval()
    x1, x2 = torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)  # 4 x 4 maps
    with torch.no_grad():
        for w in model.predict:
            w.weight.mul_(30.0)  # scores far from zero: each InfoNCE away from its log M at initialisation
        z1, z2 = enc.local_features(x1), enc.local_features(x2)
        losses = []
        for context, target in ((z1, z2), (z2, z1)):  # both ways
            c = model.context(context)
            for k in (1, 2):
                p = model.predict[k - 1](c[:, :, :-k]).permute(0, 2, 3, 1).reshape(-1, d)
                t = target[:, :, k:].permute(0, 2, 3, 1).reshape(-1, d)
                losses.append(cpc_info_nce(p, t))
        torch.testing.assert_close(model([x1, x2])[0], sum(losses) / 4)
        one_view = cpc.build(cpc.Options(steps=2, context_hidden=8, context_layers=1), enc, d)
        one_view.load_state_dict(model.state_dict())
        assert not torch.allclose(one_view.eval()([x1, x2])[0], sum(losses) / 4)  # off: view 2 is not read
    with pytest.raises(ValueError, match="two views"):
        model([x1])
    assert view_spec("cpc", cpc.Options(cross_view=False)).global_views == 1
    two = view_spec("cpc", cpc.Options(cross_view=True))
    assert two.global_views == 2 and len(RECIPES[two.family](16, 1)) == 2
