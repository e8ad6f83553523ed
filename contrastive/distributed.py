"""The only module that knows about torch.distributed.

Everything degrades to a single process (rank 0 of world size 1) when the run was not
started by torchrun, so the same code runs on one CPU: the collectives below are then
identities (or draw locally, for the shuffle).

All gathers concatenate along dim 0 in rank order: rank 0's rows, then rank 1's, ...
Except `gather_uneven`, they need the same shape on every rank (the per-process batch
is batch_size // world_size, the same everywhere).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


# --- process group -----------------------------------------------------------------


def init_from_env() -> torch.device | None:
    """Join the process group that torchrun describes in the environment.

    torchrun sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. With
    WORLD_SIZE > 1 this starts the group (once): NCCL with one GPU per process,
    cuda:LOCAL_RANK, when CUDA is available, else gloo on the CPU. Returns the device
    this process must compute on.

    Without torchrun (no WORLD_SIZE, or WORLD_SIZE=1) nothing is started and None is
    returned: the caller keeps its own device choice (--device).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", store=attempt_store(),
                                rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
    return device


def attempt_store() -> dist.Store:
    """The rendezvous store of this attempt: torchrun's store, under a prefix naming the restart.

    After `torchrun --max-restarts` brings the workers back, the store still holds the
    addresses the dead attempt published; without a fresh prefix, gloo reads them and
    connects to ports nobody listens on any more.
    """
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), int(os.environ["WORLD_SIZE"]),
                          is_master=not agent_store and int(os.environ["RANK"]) == 0)
    return dist.PrefixStore(f"attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def cleanup() -> None:
    """Leave the process group, if there is one (end of a run, or after an error)."""
    if is_initialized():
        dist.destroy_process_group()


def main_first(fn: Callable[[], object]) -> object:
    """fn() on rank 0, then on the other ranks once rank 0 is done: a first read that fills a cache (the parse of a
    source tree, contrastive.code.cache) is done once, and the others read what it wrote."""
    if is_main():
        out = fn()
        barrier()
        return out
    barrier()
    return fn()


def continue_on_main() -> bool:
    """After the stages every process shares (pretraining): True on the one process that goes on alone.

    Without torchrun: True. Under torchrun, every rank waits here and leaves the group, so what follows runs
    as one process (its gathers are identities); rank 0 returns True and takes the CPU threads its local peers
    had (torchrun starts each worker with OMP_NUM_THREADS=1), the others return False and stop."""
    if not is_initialized():
        return True
    main, peers = is_main(), int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))
    dist.barrier()
    cleanup()
    if main:
        torch.set_num_threads(min(available_cores(), torch.get_num_threads() * peers))
    return main


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def barrier() -> None:
    """Wait until every process gets here (e.g. rank 0 has written a file the others read)."""
    if is_initialized():
        dist.barrier()


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """The module to call in the training step: DDP around `model` under torchrun, else `model`.

    DDP starts by copying rank 0's parameters and buffers to every rank (so the MoCo
    queue and the key / target networks start equal) and averages the gradients in
    backward. Keep the returned wrapper alive while training: its reducer does the
    averaging. Buffers are not re-broadcast at every step (broadcast_buffers=False): each
    rank's BN statistics follow its own batches, as on separate GPUs; `sync_buffers`
    makes them rank 0's before evaluation and checkpoints. Call convert_sync_bn first.
    Methods with extra calls (update_target, encoder) are reached on `model`, not on the
    wrapper.
    """
    if world_size() == 1:
        return model
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    with warnings.catch_warnings():  # torch >= 2.14 renames the flag; the old name works on every supported torch
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


def _collective_device() -> torch.device:
    """Where small bookkeeping tensors must live for the backend: the GPU for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# --- collectives -------------------------------------------------------------------


def _all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """(n, ...) on every rank -> (world * n, ...) in rank order; no autograd."""
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward sums the gradient over ranks, then keeps this rank's rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.n = x.shape[0]
        return _all_gather_cat(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()  # all_reduce is in place; autograd's tensor is not ours to change
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = rank() * ctx.n
        return grad[start:start + ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(n, ...) on each rank -> (world * n, ...) in rank order, with gradients back to each rank's x.

    Rows [rank * n, (rank + 1) * n) of the result are this rank's x. Backward all-reduces
    (SUMs) the incoming gradient over ranks and returns this rank's rows.

    Why SUM, when DDP then AVERAGES the parameter gradients over the W ranks: call L the
    loss of the whole global batch (the mean over all its anchors). Rank s computes a
    loss L_s from the gathered tensor: either L itself (every rank solves the same global
    problem, L_s = L) or the mean over its own queries (L = mean_s L_s). Only rank r's
    graph reaches its own x_r, and the gradients dL_s/dx_r computed on the other ranks
    exist only there. The SUM brings them home: rank r gets sum_s dL_s/dx_r, which is
    W * dL/dx_r in both cases (W copies of L, or W * mean_s). Backpropagating that through
    its encoder gives W times rank r's share of dL/dtheta; DDP's average over ranks
    divides by W and adds up the shares: exactly the single-process gradient of L.
    Slicing without the SUM gives 1/W of it (lightly-ai/lightly#1977). The rows of x come
    from its rank, never from a guessed label offset, which avoids lightly#1176.

    The identity at world size 1.
    """
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather(x: torch.Tensor) -> torch.Tensor:
    """(n, ...) on each rank -> (world * n, ...) in rank order, without gradient.

    For tensors that are constants of the loss: MoCo's keys for the queue, features for
    evaluation when every rank holds the same count. The identity at world size 1.
    """
    if world_size() == 1:
        return x
    return _all_gather_cat(x)


@torch.no_grad()
def gather_uneven(x: torch.Tensor) -> torch.Tensor:
    """(n_r, ...) on rank r, n_r may differ -> (sum_r n_r, ...) in rank order, without gradient.

    For evaluation features of a dataset split by `shard`: the ranks' counts are gathered
    first, every rank pads its rows to the largest count, and the padding is cut off
    after the gather. The identity at world size 1.
    """
    if world_size() == 1:
        return x
    x = x.contiguous()
    counts = _all_gather_cat(torch.tensor([x.shape[0]], device=x.device)).tolist()  # (world,)
    most = max(counts)
    padded = x.new_zeros((most, *x.shape[1:]))
    padded[:x.shape[0]] = x
    parts = _all_gather_cat(padded).split(most)  # world blocks of (most, ...)
    return torch.cat([part[:count] for part, count in zip(parts, counts)])


@torch.no_grad()
def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of x over ranks, as a new tensor (x is unchanged); e.g. the logged loss.

    Integer tensors are averaged in float. The identity (a copy) at world size 1.
    """
    x = x.detach().clone() if x.is_floating_point() else x.detach().double()
    if world_size() == 1:
        return x
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / world_size()


@torch.no_grad()
def broadcast(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite x in place with rank `src`'s x and return it. The identity at world size 1."""
    if world_size() > 1:
        dist.broadcast(x, src=src)
    return x


def all_true(flag: bool) -> bool:
    """True on every rank when `flag` is True on every rank (e.g. "my loss is finite"), so all
    ranks take the same branch and no rank waits in a collective the others skipped."""
    if world_size() == 1:
        return bool(flag)
    t = torch.tensor([int(bool(flag))], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


@torch.no_grad()
def sync_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s buffers (BN running statistics, MoCo's queue) into every rank's module.

    Parameters are already equal under DDP; buffers drift apart when each rank's BN sees
    its own batches. A no-op at world size 1.
    """
    if world_size() == 1:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=src)


def shard(n: int) -> slice:
    """This rank's contiguous part of range(n): for evaluating a dataset on every rank.

    The first n % world ranks get one item more; no item is repeated or padded (unlike
    DistributedSampler, which pads to equal counts and strides). The shards in rank order
    are range(n) in order, so `gather_uneven(features[shard(n)])` is the features of all n
    items in the dataset's order. slice(0, n) at world size 1.
    """
    w, r = world_size(), rank()
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return slice(start, start + base + (1 if r < extra else 0))


# --- MoCo's shuffled batch ---------------------------------------------------------


@torch.no_grad()
def shuffle_across_ranks(x: torch.Tensor, generator: torch.Generator | None = None
                         ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Deal the global batch out again in a random order; returns (x_local, unshuffle).

    MoCo sec. 3.3 (shuffling BN): the key encoder sees a different random mix of samples
    on each rank than the query encoder, so batch statistics cannot leak which key is the
    positive. The global batch (world * n, ...) is gathered, rank 0 draws a permutation
    (with `generator`, a CPU generator, else the default one) and sends it to every rank,
    and each rank keeps its n rows of the permuted batch.

    unshuffle(y): y is (n, ...) computed row by row from x_local on every rank; returns
    (n, ...) rows in the order of this rank's original x (gathers y, applies the inverse
    permutation, keeps this rank's rows).

    On one process the batch is permuted in place of being dealt out, so BN split groups
    (contrastive.norm.SplitBatchNorm2d) each get a random mix; unshuffle restores the order.
    No gradient flows through either direction.
    """
    n, w, r = x.shape[0], world_size(), rank()
    x_all = gather(x)  # (w * n, ...)
    if r == 0:
        perm = torch.randperm(w * n, generator=generator).to(x.device)
    else:
        perm = torch.empty(w * n, dtype=torch.long, device=x.device)
    broadcast(perm, src=0)
    inverse = torch.argsort(perm)  # position of each original row in the permuted batch
    mine = slice(r * n, (r + 1) * n)

    def unshuffle(y: torch.Tensor) -> torch.Tensor:
        return gather(y)[inverse[mine]]

    return x_all[perm[mine]], unshuffle


@torch.no_grad()
def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum of x over ranks, as a new tensor (x is unchanged): DINO's center of the global batch,
    SwAV's Sinkhorn normalisations over the global batch. The identity (a copy) at world size 1."""
    x = x.detach().clone()
    if world_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x
