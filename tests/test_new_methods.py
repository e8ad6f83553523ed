"""SimSiam, Barlow Twins, VICReg and MoCo v3: each loss against its parts and the paper's formula,
stop-gradients and the EMA target, two gloo processes against one, and each method end to end
through the registry, the training loop, a checkpoint and the command line."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import make_splits
from contrastive import distributed as dist
from contrastive.heads import mlp
from contrastive.methods import METHODS, BarlowTwins, MoCoV3, SimSiam, VICReg
from contrastive.methods.mocov3 import contrastive_loss
from contrastive.momentum import cosine_ema, frozen_copy

from test_distributed import WORLD, run_two_ranks  # noqa: E402
from test_methods import fixed_views, tiny_encoder  # noqa: E402

NEW = ["simsiam", "barlow_twins", "vicreg", "mocov3"]


def two_batches():
    """Two views from different images, so that pairing a view with itself shows in the loss."""
    return fixed_views(seed=1)[0], fixed_views(seed=2)[0]


def build(name):
    enc, d = tiny_encoder()
    if name == "simsiam":
        return SimSiam(enc, d, proj_hidden=32, proj_dim=16, head_layers=3, pred_hidden=8)
    if name == "barlow_twins":
        return BarlowTwins(enc, d, proj_hidden=32, proj_dim=16, redundancy_weight=0.01)
    if name == "vicreg":
        return VICReg(enc, d, proj_hidden=32, proj_dim=16, sim_weight=10.0, var_weight=20.0, cov_weight=3.0)
    return MoCoV3(enc, d, proj_hidden=32, proj_dim=16, pred_hidden=32, temperature=0.5, base_ema=0.9)


def cos(p, z):
    return F.cosine_similarity(p, z, dim=1).mean()


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# --- SimSiam -------------------------------------------------------------------------------------


def test_simsiam_pairs_each_prediction_with_the_other_views_projection():
    model = build("simsiam")
    x1, x2 = two_batches()
    with torch.no_grad():
        z1, z2 = model.project(x1), model.project(x2)
        p1, p2 = model.predictor(z1), model.predictor(z2)
    loss, _ = model([x1, x2])
    torch.testing.assert_close(loss, -cos(p1, z2) / 2 - cos(p2, z1) / 2)  # Algorithm 1
    assert (loss.detach() - (-cos(p1, z1) / 2 - cos(p2, z2) / 2)).abs() > 1e-3  # p1 with z1 is not it


def test_simsiam_stop_gradient_on_the_projection_side():
    model = build("simsiam")
    twin = copy.deepcopy(model)
    x1, x2 = two_batches()
    model([x1, x2])[0].backward()

    def by_hand(stop: bool):
        twin.zero_grad()
        z1, z2 = twin.project(x1), twin.project(x2)
        p1, p2 = twin.predictor(z1), twin.predictor(z2)
        t1, t2 = (z1.detach(), z2.detach()) if stop else (z1, z2)
        (-cos(p1, t2) / 2 - cos(p2, t1) / 2).backward()
        return grads(twin)

    with_stop, without = by_hand(True), by_hand(False)
    for name, g in grads(model).items():
        torch.testing.assert_close(g, with_stop[name], msg=name)
    # the stop-gradient changes the encoder's gradient (the check above is not vacuous)
    assert not torch.allclose(with_stop["encoder.features.0.weight"], without["encoder.features.0.weight"], atol=1e-6)
    assert model.projector[-1][-1].affine is False and len(model.predictor) == 2  # output BN w/o affine; 2 layers


# --- Barlow Twins and VICReg: against the papers' formulas -----------------------------------------


def barlow_by_hand(z1, z2, lam):
    """Barlow Twins eq. 1-2: standardise each dimension over the batch, c = z1n^T z2n / N."""
    n = z1.shape[0]
    z1n = (z1 - z1.mean(0)) / torch.sqrt(z1.var(0, unbiased=False) + 1e-5)
    z2n = (z2 - z2.mean(0)) / torch.sqrt(z2.var(0, unbiased=False) + 1e-5)
    c = z1n.T @ z2n / n
    off = c - torch.diag(torch.diagonal(c))
    return ((1 - torch.diagonal(c)) ** 2).sum() + lam * (off ** 2).sum()


def vicreg_by_hand(z1, z2, lam, mu, nu):
    """VICReg eq. 6 with the official code's variance (eps 1e-4) and covariance (/ d) terms."""
    n, d = z1.shape
    inv = ((z1 - z2) ** 2).mean()
    var = sum(F.relu(1 - torch.sqrt(z.var(0) + 1e-4)).mean() / 2 for z in (z1, z2))
    cov = 0.0
    for z in (z1, z2):
        c = (z - z.mean(0)).T @ (z - z.mean(0)) / (n - 1)
        cov = cov + ((c - torch.diag(torch.diagonal(c))) ** 2).sum() / d
    return lam * inv + mu * var + nu * cov


def test_barlow_twins_loss_is_the_papers_formula_of_its_projections():
    model = build("barlow_twins")
    x1, x2 = two_batches()
    with torch.no_grad():
        z1, z2 = model.project(x1), model.project(x2)
    loss, _ = model([x1, x2])
    torch.testing.assert_close(loss, barlow_by_hand(z1, z2, 0.01))
    assert model.projector[-1][0].bias is None and not any("2.0.bias" in k for k in model.state_dict())


def test_vicreg_loss_is_the_papers_formula_of_its_embeddings():
    model = build("vicreg")
    x1, x2 = two_batches()
    with torch.no_grad():
        z1, z2 = model.expand(x1), model.expand(x2)
    loss, _ = model([x1, x2])
    torch.testing.assert_close(loss, vicreg_by_hand(z1, z2, 10.0, 20.0, 3.0))
    # the invariance term pairs row i of each view: shuffling one view's rows changes the loss
    assert (loss.detach() - vicreg_by_hand(z1, z2.flip(0), 10.0, 20.0, 3.0)).abs() > 1e-3


# --- MoCo v3 -------------------------------------------------------------------------------------


def naive_ctr(q, keys, offset, t):
    q, keys = F.normalize(q, dim=1), F.normalize(keys, dim=1)
    terms = [-(q[i] @ keys[offset + i] / t - torch.logsumexp(q[i] @ keys.T / t, 0)) for i in range(len(q))]
    return torch.stack(terms).mean() * 2 * t


@pytest.mark.parametrize("t", [0.2, 1.0])
def test_mocov3_loss_closed_form_for_orthonormal_identical_views_and_naive_reference(t):
    n = 4
    keys = torch.eye(2 * n, 16, dtype=torch.float64)  # 2n orthonormal keys: as if from 2 ranks of n
    # queries equal to their keys: the positive logit is 1/T, every other one 0
    for offset in (0, n):
        loss = contrastive_loss(keys[offset:offset + n], keys, offset, t)
        torch.testing.assert_close(loss, torch.tensor(2 * t * math.log(1 + (2 * n - 1) * math.exp(-1 / t)),
                                                      dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(5, 8, generator=g, dtype=torch.float64), torch.randn(10, 8, generator=g, dtype=torch.float64)
    torch.testing.assert_close(contrastive_loss(q, k, 5, t), naive_ctr(q, k, 5, t))


def test_mocov3_pairs_each_query_with_the_other_views_keys():
    model = build("mocov3")
    x1, x2 = two_batches()
    with torch.no_grad():
        q1, q2 = model.query(x1), model.query(x2)
        k1, k2 = model.key(x1), model.key(x2)
    loss, metrics = model([x1, x2])
    torch.testing.assert_close(loss, naive_ctr(q1, k2, 0, 0.5) + naive_ctr(q2, k1, 0, 0.5))
    assert (loss.detach() - (naive_ctr(q1, k1, 0, 0.5) + naive_ctr(q2, k2, 0, 0.5))).abs() > 1e-3
    assert metrics == {"momentum": pytest.approx(0.9)}
    assert model.predictor[-1][-1].affine is False and len(model.projector) == 3


def test_mocov3_key_encoder_gets_no_gradient_and_follows_the_cosine_momentum():
    model = build("mocov3")
    target = ("key_encoder", "key_projector")
    views = fixed_views()
    loss, _ = model(views)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for t in target for p in getattr(model, t).parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.predictor.parameters())
    trainable = copy.deepcopy(model)  # frozen or not, the keys are outside the loss's graph
    key_params = [p.requires_grad_(True) for t in target for p in getattr(trainable, t).parameters()]
    assert all(g is None for g in torch.autograd.grad(trainable(views)[0], key_params, allow_unused=True))
    # the momentum network is the encoder and the projector, no predictor
    n_key = sum(p.numel() for t in target for p in getattr(model, t).parameters())
    assert n_key == sum(p.numel() for p in [*model.encoder.parameters(), *model.projector.parameters()])

    before = {t: copy.deepcopy(getattr(model, t)) for t in target}
    torch.optim.SGD(model.parameters(), lr=0.1).step()  # moves the online network only
    model.update_target(0.3)
    m = cosine_ema(0.9, 0.3)
    assert 0.9 < m < 1 and float(model.momentum) == pytest.approx(m)
    for t in target:
        online = getattr(model, t.replace("key_", ""))
        for p_t, p_before, p_online in zip(getattr(model, t).parameters(), before[t].parameters(),
                                          online.parameters()):
            torch.testing.assert_close(p_t, m * p_before + (1 - m) * p_online)
        assert any(not torch.equal(a, b) for a, b in zip(before[t].parameters(), online.parameters()))
    model.update_target(1.0)
    assert float(model.momentum) == 1.0


# --- two gloo processes against one (the pattern of test_distributed.py) --------------------------

N_GLOBAL = 8  # 4 per rank


def _images() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N_GLOBAL, 1, 8, 8, generator=g, dtype=torch.float64)
    return [x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64),
            x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)]


def _bn_free(name: str, gather: bool = True) -> nn.Module:
    """A float64 model without BN (per-process BN would differ from one process by design)."""
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
    if name == "barlow_twins":
        model = BarlowTwins(encoder, 16, 16, 8, head_layers=2, gather=gather)
        model.projector = mlp(16, 16, 8, 2, batch_norm=False)
    elif name == "vicreg":
        model = VICReg(encoder, 16, 16, 8, head_layers=2, gather=gather)
        model.expander = mlp(16, 16, 8, 2, batch_norm=False)
    else:
        model = MoCoV3(encoder, 16, 16, 8, head_layers=2, pred_hidden=16, temperature=0.5, gather=gather)
        model.projector = mlp(16, 16, 8, 2, batch_norm=False)
        model.predictor = mlp(8, 16, 8, 2, batch_norm=False)
        model.key_projector = frozen_copy(model.projector)
    return model.double()


def _step(model: nn.Module) -> dict:
    views = [v[dist.shard(N_GLOBAL)] for v in _images()]
    ddp = dist.data_parallel(model, torch.device("cpu"))  # alive until after backward: it averages the gradients
    loss, _ = ddp(views)
    loss.backward()
    return {"loss": loss.detach(), "grads": grads(model)}


def _job_gathered_losses():
    out = {name: _step(_bn_free(name)) for name in ("barlow_twins", "vicreg", "mocov3")}
    out["barlow_local"] = _bn_free("barlow_twins", gather=False)([v[dist.shard(N_GLOBAL)] for v in _images()])[0]
    return out


def test_two_processes_equal_one_process_on_the_global_batch(tmp_path):
    results = run_two_ranks(_job_gathered_losses, tmp_path)
    for name in ("barlow_twins", "vicreg", "mocov3"):
        model = _bn_free(name)
        loss, _ = model(_images())
        loss.backward()
        if name == "mocov3":  # each rank's own queries against every rank's keys; DDP averages the ranks
            torch.testing.assert_close(sum(r[name]["loss"] for r in results) / WORLD, loss.detach())
        else:  # every rank computes the loss of the global batch
            for r in results:
                torch.testing.assert_close(r[name]["loss"], loss.detach(), rtol=0, atol=1e-9)
        for r in results:
            assert r[name]["grads"].keys() == grads(model).keys()
            for key, g in grads(model).items():
                torch.testing.assert_close(r[name]["grads"][key], g, rtol=1e-9, atol=1e-9, msg=f"{name} {key}")
        assert any(g.abs().max() > 1e-3 for g in grads(model).values())  # not a comparison of zeros
    # without the gather each rank's c is over its own 4 images: another loss
    assert all((r["barlow_local"] - results[0]["barlow_twins"]["loss"]).abs() > 1e-3 for r in results)


# --- registry, training loop, checkpoint, command line -------------------------------------------

SMALL = {  # small heads so that a step takes milliseconds
    "simsiam": {"proj_hidden": 32, "proj_dim": 32, "pred_hidden": 16},
    "barlow_twins": {"proj_hidden": 32, "proj_dim": 32},
    "vicreg": {"proj_hidden": 32, "proj_dim": 32},
    "mocov3": {"proj_hidden": 32, "proj_dim": 16, "pred_hidden": 32},
}


@pytest.mark.parametrize("name", NEW)
def test_registered_options_resolve_to_the_files_defaults(name):
    from contrastive.config import PretrainConfig

    module = METHODS[name]
    cfg = PretrainConfig(method=name).resolve(make_splits())
    assert cfg.method_options == dataclasses.asdict(module.Options())
    assert cfg.lr == module.BASE_LR["sgd"] and set(module.BASE_LR) == {"sgd", "lars", "adamw"}
    assert set(module.SHAPE) <= set(cfg.method_options) and module.VIEWS in ("simclr", "moco", "byol")
    assert all(f.metadata["help"] for f in dataclasses.fields(module.Options))  # every default says its source
    if hasattr(module, "distributed_note"):  # the run's log line under torchrun
        assert isinstance(module.distributed_note(cfg.method_options), str)


@pytest.mark.parametrize("name", NEW)
def test_pretrain_one_epoch_and_the_checkpoint_encoder_loads(tmp_path, name):
    from contrastive.config import KnnConfig, PretrainConfig
    from contrastive.evaluate.pretrained import load_pretrained
    from contrastive.train import pretrain

    cfg = PretrainConfig(method=name, backbone="small_cnn", epochs=1, batch_size=16, lr=0.05, out=str(tmp_path / "run"),
                         method_options=dict(SMALL[name]), knn=KnnConfig(k=10, every=0))
    result = pretrain(cfg, data=make_splits(), log=lambda *_: None)
    assert result.steps == 64 // 16 and result.config.method_options["proj_hidden"] == 32
    pre = load_pretrained(result.run_dir / "checkpoint-epoch0001.pt")
    assert pre.head is None and pre.record["neck"] is None
    for key, value in result.model.encoder.state_dict().items():
        assert torch.equal(pre.encoder.state_dict()[key], value), key
    x = torch.randn(4, 1, 16, 16)
    torch.testing.assert_close(pre.encoder(x), result.model.encoder.eval()(x))


def test_command_line_lists_and_parses_the_new_methods_options(capsys):
    from contrastive.cli import build_parser
    from contrastive.commands import pretrain_config
    from contrastive.config import PretrainConfig
    from contrastive.errors import ContrastiveError

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in NEW:
        assert name in text
    assert "barlow_twins: lambda, the weight of the redundancy reduction (off-diagonal) term" in text
    assert "mocov3: softmax temperature T (official code: 1.0 for ResNets; 0.2 for ViTs) (default: 1.0)" in text
    assert "vicreg: nu, the weight of the covariance term (VICReg implementation details: 1) (default: 1.0)" in text
    args = parser.parse_args(["pretrain", "--method", "barlow_twins", "--redundancy-weight", "0.01", "--proj-dim", "64",
                              "--no-gather"])
    assert pretrain_config(args) == {"method": "barlow_twins",
                                     "method_options": {"gather": False, "proj_dim": 64, "redundancy_weight": 0.01}}
    args = parser.parse_args(["pretrain", "--method", "vicreg", "--sim-weight", "5", "--cov-weight", "2"])
    assert pretrain_config(args)["method_options"] == {"cov_weight": 2.0, "sim_weight": 5.0}
    with pytest.raises(ContrastiveError, match="--temperature is not an option of simsiam"):
        PretrainConfig(method="simsiam", method_options={"temperature": 0.5}).resolve(make_splits())
