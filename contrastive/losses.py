"""The self-supervised losses, as pure functions of tensors.

Nothing here knows about models, devices, optimizers or torch.distributed: each function
takes embeddings (or logits) and returns a scalar loss. Inputs in a low precision such as
bfloat16 are cast up, so the arithmetic is always at least float32. Anything the paper
treats as a constant (MoCo's keys and queue, BYOL's target, the distillation teacher) is
detached here, so callers cannot forget to.

Shape notation: N is the batch size, D the embedding width, K the MoCo queue length and
C the number of classes.
"""

import torch
import torch.nn.functional as F


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32, or the input's dtype if that is wider (float64 stays float64)."""
    return torch.promote_types(x.dtype, torch.float32)


def _check_temperature(loss: str, temperature: float) -> None:
    if not temperature > 0:  # also rejects NaN
        raise ValueError(f"{loss}: temperature must be > 0, got {temperature}")


def _check_same_2d_shape(
    loss: str, first: str, a: torch.Tensor, second: str, b: torch.Tensor
) -> None:
    if a.dim() != 2:
        raise ValueError(f"{loss}: {first} must be 2-D (N, D), got shape {tuple(a.shape)}")
    if a.shape != b.shape:
        raise ValueError(
            f"{loss}: {first} and {second} must have the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's normalized temperature-scaled cross-entropy (Chen et al. 2020, eq. 1).

        l(i, j) = -log  exp(sim(z_i, z_j) / T) / sum_{k != i} exp(sim(z_i, z_k) / T)

    with sim the cosine similarity. Each of the 2N views is an anchor; its partner view
    is the positive and the other 2(N - 1) views are the negatives. The loss is the mean
    of l over the 2N anchors.

    z1, z2: (N, D) projections of the first and second view of the same N images.
    A multi-process version can call this on the views gathered from every process.
    """
    _check_same_2d_shape("nt_xent", "z1", z1, "z2", z2)
    _check_temperature("nt_xent", temperature)
    n = z1.shape[0]
    z = torch.cat([z1, z2]).to(_compute_dtype(z1))  # (2N, D)
    z = F.normalize(z, dim=1)
    logits = z @ z.T / temperature  # (2N, 2N) cosine similarities / T
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))  # a view is not its own negative
    # view i of the first half pairs with view i + N of the second half, and vice versa
    targets = (torch.arange(2 * n, device=z.device) + n) % (2 * n)  # (2N,)
    return F.cross_entropy(logits, targets)


def info_nce(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2
) -> torch.Tensor:
    """MoCo's InfoNCE loss against a queue of negatives (He et al. 2020, eq. 1, Alg. 1).

        L_q = -log  exp(q . k+ / T) / (exp(q . k+ / T) + sum_{k- in queue} exp(q . k- / T))

    q: (N, D) queries from the encoder; k: (N, D) keys from the momentum encoder, the
    positives; both are L2-normalized here. queue: (K, D) negatives, already normalized
    when they were enqueued, used as they are. Keys and queue are constants: no gradient
    reaches them.
    """
    _check_same_2d_shape("info_nce", "q", q, "k", k)
    if queue.dim() != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(
            f"info_nce: queue must have shape (K, {q.shape[1]}) to match q, got {tuple(queue.shape)}"
        )
    _check_temperature("info_nce", temperature)
    dtype = _compute_dtype(q)
    q = F.normalize(q.to(dtype), dim=1)
    k = F.normalize(k.detach().to(dtype), dim=1)
    queue = queue.detach().to(dtype)
    l_pos = (q * k).sum(dim=1, keepdim=True)  # (N, 1) positive logits
    l_neg = q @ queue.T  # (N, K) negative logits
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature  # (N, 1 + K)
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)  # positive is 0
    return F.cross_entropy(logits, labels)


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's normalized mean squared error (Grill et al. 2020, eq. 2).

        L = || p/|p| - z/|z| ||^2 = 2 - 2 * <p, z> / (|p| |z|)

    averaged over the batch. p: (N, D) predictions of the online network; z: (N, D)
    projections of the other view by the target network, a constant (no gradient).
    BYOL symmetrizes by also feeding each view to the other network; the caller does
    that, adding byol_loss(p1, z2) and byol_loss(p2, z1).
    """
    _check_same_2d_shape("byol_loss", "p", p, "z", z)
    dtype = _compute_dtype(p)
    p = F.normalize(p.to(dtype), dim=1)
    z = F.normalize(z.detach().to(dtype), dim=1)
    cosine = (p * z).sum(dim=1)  # (N,)
    return (2 - 2 * cosine).mean()


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """SimCLRv2's distillation loss (Chen et al. 2020, "Big Self-Supervised Models...", eq. 2).

        L = -sum_y P_T(y | x; T) log P_S(y | x; T),   P(y | x; T) = softmax(logits / T)_y

    averaged over the batch. student_logits, teacher_logits: (N, C). The teacher is a
    constant (no gradient). As in the paper, the loss is not multiplied by T^2.
    """
    _check_same_2d_shape(
        "distillation_loss", "student_logits", student_logits, "teacher_logits", teacher_logits
    )
    _check_temperature("distillation_loss", temperature)
    dtype = _compute_dtype(student_logits)
    teacher_probs = F.softmax(teacher_logits.detach().to(dtype) / temperature, dim=1)  # (N, C)
    student_log_probs = F.log_softmax(student_logits.to(dtype) / temperature, dim=1)  # (N, C)
    return -(teacher_probs * student_log_probs).sum(dim=1).mean()
