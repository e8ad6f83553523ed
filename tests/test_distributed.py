"""Multi-process training on the CPU: two gloo processes per test, compared with one process.

Each `_job_*` function runs on both ranks inside a process group (`run_two_ranks`) and
returns tensors, which the test compares with a single-process reference computed here.
Jobs live at module level so that spawned processes can import them.
"""

from __future__ import annotations

import functools
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from contrastive import distributed as dist
from contrastive.heads import mlp
from contrastive.image.backbones import small_cnn
from contrastive.losses import sinkhorn_knopp
from contrastive.methods import (BYOL, BarlowTwins, MoCo, MoCoV3, SimCLR, VICReg, barlow_twins, byol, dino, moco,
                                 mocov3, simclr, swav, vicreg)
from contrastive.momentum import frozen_copy
from contrastive.norm import convert_sync_bn
from helpers import D64, grads, random_images


WORLD = 2


CPU = torch.device("cpu")


def _worker(rank: int, init_file: str, job, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.save(job(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.cleanup()
    _exit_without_finalizing()


def _exit_without_finalizing() -> None:
    """End a worker that succeeded without running the interpreter's finalization.

    In 1 of 10 to 1 of 25 spawned two-rank MoCo jobs, a rank aborted (SIGABRT, "terminate called
    without an active exception") after destroy_process_group had returned on both ranks,
    while the interpreter shut down; the results were already on disk. A barrier before
    leaving the group did not stop it (3 of 80); skipping finalization did (0 of 60).
    """
    os._exit(0)


def run_two_ranks(job, tmp_path) -> list:
    """job() on ranks 0 and 1 of a gloo group; the two return values, in rank order."""
    mp.start_processes(_worker, args=(str(tmp_path / "rendezvous"), job, str(tmp_path)), nprocs=WORLD,
                       join=True, start_method="spawn")
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]


# --- SimCLR: gathered negatives give the single-process gradient -------------------

N_SIMCLR = 8  # global batch; 4 per rank


def _simclr_model() -> SimCLR:
    """A float64 SimCLR without BN (PyTorch's SyncBatchNorm does not train on the CPU)."""
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
    model = SimCLR(encoder, 16, simclr.Options(proj_hidden=16, proj_dim=8, head_layers=2, temperature=0.5))
    model.projector = mlp(16, 16, 8, 2, batch_norm=False)
    return model.double()


class _GatherSliceOnly(torch.autograd.Function):
    """The wrong backward: this rank's rows of the gradient, without summing over ranks."""

    @staticmethod
    def forward(ctx, x):
        ctx.n = x.shape[0]
        return dist.gather(x)

    @staticmethod
    def backward(ctx, grad):
        return grad[dist.rank() * ctx.n:(dist.rank() + 1) * ctx.n]


def _simclr_step(model: SimCLR) -> tuple[torch.Tensor, dict]:
    views = [v.double()[dist.shard(N_SIMCLR)] for v in random_images(N_SIMCLR, seed=1)]
    ddp = dist.data_parallel(model, CPU)  # kept alive until after backward: its reducer averages the gradients
    loss, _ = ddp(views)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def _job_simclr():
    loss, grads = _simclr_step(_simclr_model())
    exact = dist.gather_with_grad
    dist.gather_with_grad = _GatherSliceOnly.apply
    try:
        _, naive_grads = _simclr_step(_simclr_model())
    finally:
        dist.gather_with_grad = exact
    return {"loss": loss, "grads": grads, "naive_grads": naive_grads}


@pytest.mark.slow
def test_simclr_gathered_loss_and_gradients_equal_one_process_on_the_global_batch(tmp_path):
    results = run_two_ranks(_job_simclr, tmp_path)
    model = _simclr_model()
    loss, _ = model([v.double() for v in random_images(N_SIMCLR, seed=1)])
    loss.backward()
    for r in results:
        torch.testing.assert_close(r["loss"], loss.detach(), rtol=0, atol=1e-9)
        for name, p in model.named_parameters():
            torch.testing.assert_close(r["grads"][name], p.grad, rtol=1e-9, atol=1e-9, msg=name)
            # without the SUM over ranks every gradient is 1/world of the right one
            torch.testing.assert_close(r["naive_grads"][name], p.grad / WORLD, rtol=1e-9, atol=1e-9, msg=name)
    assert any(p.grad.abs().max() > 1e-3 for p in model.parameters())  # the comparison above is not of zeros


# --- MoCo: shuffled keys, one queue for all ranks ----------------------------------

N_MOCO = 8  # global batch; 4 per rank


def _moco_model(bn: bool) -> MoCo:
    torch.manual_seed(0)
    if bn:
        encoder, d = small_cnn(1, width=4)
    else:  # a per-sample key function: the keys cannot depend on the shuffle
        encoder, d = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU()), 16
    return MoCo(encoder, d, moco.Options(proj_hidden=16, proj_dim=8, queue_size=20, ema=0.9, shuffle_bn=True))


def _moco_step(bn: bool) -> dict:
    model = _moco_model(bn)
    key_inputs = []
    model.key_encoder.register_forward_pre_hook(lambda module, args: key_inputs.append(args[0].clone()))
    ddp = dist.data_parallel(model, CPU)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    views = [v[dist.shard(N_MOCO)] for v in random_images(N_MOCO, seed=2)]
    loss, _ = ddp(views)
    loss.backward()
    opt.step()
    model.update_target(0.0)
    return {"queue": model.queue.clone(), "ptr": model.queue_ptr.clone(), "key_input": key_inputs[0],
            "key_params": [p.clone() for p in model.key_encoder.parameters()]}


def _job_moco_bn():
    return _moco_step(bn=True)


def _job_moco_per_sample():
    return _moco_step(bn=False)


def _rows_of(rows: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """Index into `batch` of each row of `rows` (every row occurs in the batch exactly)."""
    same = (rows[:, None] == batch[None]).flatten(2).all(dim=2)  # (len(rows), len(batch))
    assert (same.sum(dim=1) == 1).all()
    return same.int().argmax(dim=1)


@pytest.mark.slow
def test_moco_queue_holds_every_ranks_keys_in_rank_order(tmp_path):
    results = run_two_ranks(_job_moco_per_sample, tmp_path)
    model = _moco_model(bn=False)
    x2 = random_images(N_MOCO, seed=2)[1]
    with torch.no_grad():
        expected = model._encode_key(x2)  # (8, 8): rank 0's 4 keys, then rank 1's 4
    for r in results:
        torch.testing.assert_close(r["queue"][:N_MOCO], expected)
        torch.testing.assert_close(r["queue"][N_MOCO:], model.queue[N_MOCO:])  # the rest untouched
        assert int(r["ptr"]) == N_MOCO
    assert torch.equal(results[0]["queue"], results[1]["queue"])


@pytest.mark.slow
def test_moco_keys_come_from_a_batch_shuffled_across_ranks_and_go_back_in_order(tmp_path):
    results = run_two_ranks(_job_moco_bn, tmp_path)
    x2 = random_images(N_MOCO, seed=2)[1]
    assert torch.equal(results[0]["queue"], results[1]["queue"])
    for a, b in zip(results[0]["key_params"], results[1]["key_params"]):
        assert torch.equal(a, b)
    # Each rank's key encoder saw a mix of both ranks' images (the BN shortcut is broken) ...
    where = [_rows_of(r["key_input"], x2) for r in results]  # global index of each row it saw
    assert torch.equal(torch.cat(where).sort().values, torch.arange(N_MOCO))
    assert all(((w < N_MOCO // 2).any() and (w >= N_MOCO // 2).any()) for w in where)
    # ... and the queue holds each image's key in the original order: redo each rank's
    # key computation (BN over the shuffled local batch) and put the rows back by hand.
    model = _moco_model(bn=True)
    with torch.no_grad():
        shuffled_keys = torch.cat([model._encode_key(r["key_input"]) for r in results])  # (8, 8)
    expected = torch.empty_like(shuffled_keys)
    expected[torch.cat(where)] = shuffled_keys
    torch.testing.assert_close(results[0]["queue"][:N_MOCO], expected)
    # and this order is not what a key encoder on the unshuffled local batches gives
    with torch.no_grad():
        unshuffled = torch.cat([model._encode_key(x2[:4]), model._encode_key(x2[4:])])
    assert not torch.allclose(expected, unshuffled, atol=1e-4)


def _job_shuffle():
    n = 8
    x = torch.arange(dist.rank() * n, (dist.rank() + 1) * n, dtype=torch.float64)  # global indices
    local, unshuffle = dist.shuffle_across_ranks(x, generator=torch.Generator().manual_seed(3))
    per_sample = torch.stack([2 * local + 1, local ** 2], dim=1)  # (n, 2), row by row
    return {"x": x, "local": local, "back": unshuffle(local), "per_sample_back": unshuffle(per_sample)}


@pytest.mark.slow
def test_shuffle_across_ranks_deals_a_mix_and_unshuffle_restores_order(tmp_path):
    results = run_two_ranks(_job_shuffle, tmp_path)
    dealt = torch.cat([r["local"] for r in results])
    assert torch.equal(dealt.sort().values, torch.arange(16, dtype=torch.float64))  # one permutation for all
    for r in results:
        assert (r["local"] < 8).any() and (r["local"] >= 8).any()  # a mix of both ranks
        assert torch.equal(r["back"], r["x"])
        assert torch.equal(r["per_sample_back"], torch.stack([2 * r["x"] + 1, r["x"] ** 2], dim=1))


def _byol_model() -> BYOL:
    torch.manual_seed(0)
    encoder, d = small_cnn(1, width=4)
    return BYOL(encoder, d, byol.Options(proj_hidden=16, proj_dim=8, pred_hidden=16, ema=0.9))


def _job_byol():
    model = _byol_model()
    ddp = dist.data_parallel(model, CPU)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    for step in range(3):
        views = random_images(4, seed=10 * step + dist.rank())  # different images on each rank
        loss, _ = ddp(views)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_target(step / 3)
    targets = list(model.target_encoder.parameters()) + list(model.target_projector.parameters())
    return {"target": [p.clone() for p in targets], "online": [p.clone() for p in model.parameters()]}


@pytest.mark.slow
def test_byol_target_weights_identical_across_ranks_after_ddp_steps(tmp_path):
    results = run_two_ranks(_job_byol, tmp_path)
    for a, b in zip(results[0]["target"], results[1]["target"]):
        assert torch.equal(a, b)
    for a, b in zip(results[0]["online"], results[1]["online"]):
        assert torch.equal(a, b)
    init = _byol_model()
    init_targets = list(init.target_encoder.parameters()) + list(init.target_projector.parameters())
    assert any(not torch.allclose(a, b) for a, b in zip(results[0]["target"], init_targets))  # it moved


def _job_collectives():
    r = dist.rank()
    uneven = torch.arange(3 if r == 0 else 5).double()[:, None].repeat(1, 2) + 100 * r  # (3 or 5, 2)
    data = torch.arange(7.0)[:, None] * torch.ones(1, 3)  # the same 7 items on both ranks
    x = torch.full((2, 3), float(r + 1), requires_grad=True)
    weights = torch.arange(12.0).view(4, 3)  # the same on both ranks
    (dist.gather_with_grad(x) * weights).sum().backward()
    sent = torch.full((3,), float(r))
    bn = nn.BatchNorm1d(2)
    bn.running_mean.fill_(r + 1.0)
    dist.sync_buffers(bn)
    return {
        "all_true": (dist.all_true(True), dist.all_true(r == 0), dist.all_true(False)),
        "synced": bn.running_mean,
        "uneven": dist.gather_uneven(uneven),
        "sharded": dist.gather_uneven(data[dist.shard(7)]),
        "shard": (dist.shard(7).start, dist.shard(7).stop),
        "gather": dist.gather(torch.tensor([r, r])),
        "bf16": dist.gather(torch.full((2,), r + 0.5, dtype=torch.bfloat16)),
        "mean": dist.all_reduce_mean(torch.tensor([float(r), 4.0])),
        "broadcast": dist.broadcast(sent, src=1),
        "grad": x.grad,
    }


@pytest.mark.slow
def test_collectives_on_two_ranks(tmp_path):
    results = run_two_ranks(_job_collectives, tmp_path)
    expected_uneven = torch.cat([torch.arange(3).double()[:, None].repeat(1, 2),
                                 torch.arange(5).double()[:, None].repeat(1, 2) + 100])
    assert [r["shard"] for r in results] == [(0, 4), (4, 7)]
    for r in results:
        assert torch.equal(r["uneven"], expected_uneven)
        assert torch.equal(r["sharded"], torch.arange(7.0)[:, None] * torch.ones(1, 3))
        assert torch.equal(r["gather"], torch.tensor([0, 0, 1, 1]))
        assert torch.equal(r["bf16"], torch.tensor([0.5, 0.5, 1.5, 1.5], dtype=torch.bfloat16))
        assert torch.equal(r["mean"], torch.tensor([0.5, 4.0]))
        assert torch.equal(r["broadcast"], torch.ones(3))
        assert r["all_true"] == (True, False, False)
        assert torch.equal(r["synced"], torch.ones(2))  # rank 0's statistics
    # every rank's loss sum(y * w) reaches rank r's x through rows 2r, 2r+1 of w: the SUM doubles it
    weights = torch.arange(12.0).view(4, 3)
    for rank, r in enumerate(results):
        assert torch.equal(r["grad"], WORLD * weights[2 * rank:2 * rank + 2])


def _job_main_first_then_main_alone(cache: str):
    def read_or_fill():  # a cache: the first caller fills it, the others read it
        if os.path.exists(cache):
            with open(cache) as f:
                return f"read {f.read()}"
        with open(cache, "w") as f:
            f.write(str(dist.rank()))
        return "filled"

    seen = dist.main_first(read_or_fill)
    go_on = dist.continue_on_main()
    return {"seen": seen, "go_on": go_on, "grouped_after": dist.is_initialized(), "threads": torch.get_num_threads()}


def test_rank_0_fills_a_cache_first_and_goes_on_alone_with_the_threads_of_both(tmp_path):
    results = run_two_ranks(functools.partial(_job_main_first_then_main_alone, str(tmp_path / "cache")), tmp_path)
    assert [r["seen"] for r in results] == ["filled", "read 0"]  # rank 1 waited for rank 0's cache
    assert [r["go_on"] for r in results] == [True, False]
    assert [r["grouped_after"] for r in results] == [False, False]  # what follows is one process: no collectives
    assert [r["threads"] for r in results] == [min(dist.available_cores(), 2), 1]  # each worker had 1 thread


def test_without_torchrun_everything_goes_on():
    assert dist.main_first(lambda: 7) == 7 and dist.continue_on_main() is True


def _env_worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    device = dist.init_from_env()
    seen = {"device": str(device), "rank": dist.rank(), "world": dist.world_size(), "main": dist.is_main()}
    dist.barrier()
    dist.cleanup()
    seen["after_cleanup"] = dist.is_initialized()
    torch.save(seen, os.path.join(out_dir, f"rank{rank}.pt"))
    _exit_without_finalizing()


@pytest.mark.slow
def test_init_from_env_joins_the_group_torchrun_describes(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_env_worker, args=(port, str(tmp_path)), nprocs=WORLD, join=True, start_method="spawn")
    seen = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    expected_device = "cuda:{}" if torch.cuda.is_available() else "cpu"
    assert seen == [{"device": expected_device.format(r), "rank": r, "world": WORLD, "main": r == 0,
                     "after_cleanup": False} for r in range(WORLD)]


def test_one_process_fallbacks_are_identities(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert dist.init_from_env() is None and not dist.is_initialized()
    assert (dist.rank(), dist.world_size(), dist.is_main()) == (0, 1, True)
    x = torch.randn(5, 3, requires_grad=True)
    y = dist.gather_with_grad(x)
    (y * 2).sum().backward()
    assert torch.equal(y, x) and torch.equal(x.grad, torch.full((5, 3), 2.0))
    assert torch.equal(dist.gather(x), x) and torch.equal(dist.gather_uneven(x), x)
    mean = dist.all_reduce_mean(x)
    assert torch.equal(mean, x) and not mean.requires_grad
    assert torch.equal(dist.broadcast(x.detach().clone()), x)
    assert dist.shard(7) == slice(0, 7)
    assert dist.all_true(True) and not dist.all_true(False)
    bn = nn.BatchNorm1d(2)
    dist.sync_buffers(bn)
    assert dist.data_parallel(bn, CPU) is bn
    dist.barrier()
    dist.cleanup()
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    assert convert_sync_bn(model, "cpu") is model and isinstance(model[1], nn.BatchNorm2d)


def test_one_process_shuffle_permutes_and_unshuffle_restores():
    x = torch.arange(16.0)
    local, unshuffle = dist.shuffle_across_ranks(x, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(local, x) and torch.equal(local.sort().values, x)
    assert torch.equal(unshuffle(local), x)
    assert torch.equal(unshuffle(local[:, None] * torch.ones(1, 4)), x[:, None] * torch.ones(1, 4))


# --- SimSiam, Barlow Twins, VICReg, MoCo v3: two gloo processes against one ------------------------

N_PAIRED = 8  # 4 per rank


def _paired_views() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N_PAIRED, 1, 8, 8, generator=g, dtype=torch.float64)
    return [x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64),
            x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)]


def _bn_free_paired(name: str, gather: bool = True) -> nn.Module:
    """A float64 model without BN (per-process BN would differ from one process by design)."""
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
    if name == "barlow_twins":
        model = BarlowTwins(encoder, 16, barlow_twins.Options(proj_hidden=16, proj_dim=8, head_layers=2, gather=gather))
        model.projector = mlp(16, 16, 8, 2, batch_norm=False)
    elif name == "vicreg":
        model = VICReg(encoder, 16, vicreg.Options(proj_hidden=16, proj_dim=8, head_layers=2, gather=gather))
        model.expander = mlp(16, 16, 8, 2, batch_norm=False)
    else:
        model = MoCoV3(encoder, 16, mocov3.Options(proj_hidden=16, proj_dim=8, head_layers=2, pred_hidden=16,
                                                   temperature=0.5, gather=gather))
        model.projector = mlp(16, 16, 8, 2, batch_norm=False)
        model.predictor = mlp(8, 16, 8, 2, batch_norm=False)
        model.key_projector = frozen_copy(model.projector)
    return model.double()


def _paired_step(model: nn.Module) -> dict:
    views = [v[dist.shard(N_PAIRED)] for v in _paired_views()]
    ddp = dist.data_parallel(model, torch.device("cpu"))  # alive until after backward: it averages the gradients
    loss, _ = ddp(views)
    loss.backward()
    return {"loss": loss.detach(), "grads": grads(model)}


def _job_gathered_losses():
    out = {name: _paired_step(_bn_free_paired(name)) for name in ("barlow_twins", "vicreg", "mocov3")}
    local = _bn_free_paired("barlow_twins", gather=False)
    out["barlow_local"] = local([v[dist.shard(N_PAIRED)] for v in _paired_views()])[0]
    return out


@pytest.mark.slow
def test_simsiam_barlow_vicreg_mocov3_on_two_processes_equal_one_process_on_the_global_batch(tmp_path):
    results = run_two_ranks(_job_gathered_losses, tmp_path)
    for name in ("barlow_twins", "vicreg", "mocov3"):
        model = _bn_free_paired(name)
        loss, _ = model(_paired_views())
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


# --- DINO's center and SwAV's Sinkhorn: two gloo processes against one -------------------------------

N_CROPS_GLOBAL = 8  # 4 per rank


def _multicrop_views() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randn(N_CROPS_GLOBAL, 16, generator=g, dtype=D64) for _ in range(4)]


def _bn_free_multicrop(name: str) -> nn.Module:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(16, 16), nn.ReLU())
    if name == "dino":
        model = dino.DINO(encoder, 16, dino.Options(out_dim=12, proj_hidden=16, bottleneck=8, freeze_last_layer=0))
    else:
        model = swav.SwAV(encoder, 16, swav.Options(proj_dim=8, proj_hidden=16, prototypes=5, freeze_prototypes=0,
                                                    queue_length=0))
        model.projector = mlp(16, 16, 8, 2, batch_norm=False)
    return model.double()


def _job_center_and_sinkhorn():
    out = {}
    for name in ("dino", "swav"):
        model = _bn_free_multicrop(name)
        ddp = dist.data_parallel(model, torch.device("cpu"))
        loss, _ = ddp([v[dist.shard(N_CROPS_GLOBAL)] for v in _multicrop_views()])
        loss.backward()
        out[name] = {"loss": loss.detach(), "grads": {k: p.grad.clone() for k, p in model.named_parameters()
                                                      if p.grad is not None}}
        if name == "dino":
            out["center"] = model.center.clone()
    scores = _multicrop_views()[0][:, :6]
    out["codes"] = sinkhorn_knopp(scores[dist.shard(N_CROPS_GLOBAL)], 0.05, 3, total=dist.all_reduce_sum)
    out["local_codes"] = sinkhorn_knopp(scores[dist.shard(N_CROPS_GLOBAL)], 0.05, 3)
    return out


@pytest.mark.slow
def test_center_and_sinkhorn_across_two_processes_equal_one_process(tmp_path):
    results = run_two_ranks(_job_center_and_sinkhorn, tmp_path)
    codes = sinkhorn_knopp(_multicrop_views()[0][:, :6], 0.05, 3)
    for r, part in zip(results, (slice(0, 4), slice(4, 8))):
        torch.testing.assert_close(r["codes"], codes[part], rtol=1e-9, atol=1e-12)
        assert not torch.allclose(r["local_codes"], codes[part])  # the all-reduce matters
    for name in ("dino", "swav"):
        model = _bn_free_multicrop(name)
        loss, _ = model(_multicrop_views())
        loss.backward()
        # per-image losses: the mean of the ranks' losses is the global one, and DDP averages the gradients
        torch.testing.assert_close(sum(r[name]["loss"] for r in results) / WORLD, loss.detach())
        for key, p in model.named_parameters():
            if p.grad is not None:
                for r in results:
                    torch.testing.assert_close(r[name]["grads"][key], p.grad, rtol=1e-8, atol=1e-10, msg=key)
        assert any(p.grad.abs().max() > 1e-4 for p in model.parameters() if p.grad is not None)
        if name == "dino":
            for r in results:
                torch.testing.assert_close(r["center"], model.center, rtol=1e-9, atol=1e-12)
            assert model.center.abs().max() > 0
