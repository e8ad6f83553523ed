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


# --- the methods after contrastive pairs: no negatives, or clusters ------------------------------


def _off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square matrix, flattened."""
    d = m.shape[0]
    return m.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambda_: float = 5e-3) -> torch.Tensor:
    """Barlow Twins (Zbontar et al. 2021, Algorithm 1).

    Each dimension is standardised over the batch as the official code's affine-free
    BatchNorm does (biased variance, eps 1e-5); c = z1n^T z2n / N is the (D, D)
    cross-correlation; the loss is sum_i (1 - c_ii)^2 + lambda * sum_{i != j} c_ij^2.
    lambda = 5e-3 is the paper's (sec. 4, for D = 8192).
    z1, z2: (N, D) projections of the two views. Under torchrun the official code sums c
    over processes before the loss (methods/ does that, not this function).
    """
    _check_same_2d_shape("barlow_twins_loss", "z1", z1, "z2", z2)
    dtype = _compute_dtype(z1)
    n = z1.shape[0]
    with torch.autocast(z1.device.type, enabled=False):  # a D x D sum of N products: never in bf16
        z1n, z2n = (F.batch_norm(z.to(dtype), None, None, training=True, eps=1e-5) for z in (z1, z2))  # (N, D)
        c = z1n.T @ z2n / n  # (D, D)
        return barlow_twins_from_correlation(c, lambda_)


def barlow_twins_from_correlation(c: torch.Tensor, lambda_: float = 5e-3) -> torch.Tensor:
    """The Barlow Twins objective of a (D, D) cross-correlation matrix (see barlow_twins_loss)."""
    on_diag = (1 - torch.diagonal(c)).pow(2).sum()
    return on_diag + lambda_ * _off_diagonal(c).pow(2).sum()


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, sim_weight: float = 25.0, var_weight: float = 25.0,
                cov_weight: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """VICReg (Bardes et al. 2022, eq. 6), as the official code computes it.

    invariance: mean squared error between the two views; variance: the mean over
    dimensions of max(0, 1 - sqrt(Var(z_j) + eps)) (unbiased variance over the batch),
    averaged over the two views; covariance: each view's off-diagonal covariance entries
    (divided by N - 1) squared, summed and divided by D. Weights 25 / 25 / 1 are the paper's.
    z1, z2: (N, D) expander outputs of the two views.
    """
    _check_same_2d_shape("vicreg_loss", "z1", z1, "z2", z2)
    if z1.shape[0] < 2:
        raise ValueError("vicreg_loss: the variance and covariance terms need a batch of at least 2")
    dtype = _compute_dtype(z1)
    z1, z2 = z1.to(dtype), z2.to(dtype)
    n, d = z1.shape
    with torch.autocast(z1.device.type, enabled=False):  # the covariances are sums of N products: never in bf16
        invariance = F.mse_loss(z1, z2)
        c1, c2 = z1 - z1.mean(dim=0), z2 - z2.mean(dim=0)  # (N, D) centred
        std1, std2 = (torch.sqrt(c.var(dim=0) + eps) for c in (c1, c2))  # (D,) unbiased
        variance = F.relu(1 - std1).mean() / 2 + F.relu(1 - std2).mean() / 2
        cov1, cov2 = c1.T @ c1 / (n - 1), c2.T @ c2 / (n - 1)  # (D, D)
        covariance = _off_diagonal(cov1).pow(2).sum() / d + _off_diagonal(cov2).pow(2).sum() / d
        return sim_weight * invariance + var_weight * variance + cov_weight * covariance


def simsiam_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, z) (Chen & He 2021, Algorithm 1): negative cosine similarity, mean over
    the batch, with z detached (the stop-gradient). The symmetric loss is
    simsiam_loss(p1, z2) / 2 + simsiam_loss(p2, z1) / 2."""
    _check_same_2d_shape("simsiam_loss", "p", p, "z", z)
    dtype = _compute_dtype(p)
    return -F.cosine_similarity(p.to(dtype), z.detach().to(dtype), dim=1).mean()


def dino_loss(student_out: list[torch.Tensor], teacher_out: list[torch.Tensor], center: torch.Tensor,
              student_temperature: float = 0.1, teacher_temperature: float = 0.04) -> torch.Tensor:
    """DINO (Caron et al. 2021, Algorithm 1 and the official code's DINOLoss).

    student_out: one (B, K) logits tensor per view (global views first, then local);
    teacher_out: one (B, K) per global view; center: (K,) or (1, K). The teacher's
    distribution softmax((t - center) / T_t) is detached; the loss is the cross-entropy
    -sum_k P_t log P_s(T_s), averaged over the batch and over every (teacher view i,
    student view v) pair with v != i. Temperatures 0.1 / 0.04 are the paper's (0.04 is
    the end of the teacher's warm-up from 0.04 to 0.07 in the code; 0.04 without warm-up).
    """
    _check_temperature("dino_loss", student_temperature)
    _check_temperature("dino_loss", teacher_temperature)
    if not student_out or not teacher_out:
        raise ValueError("dino_loss: needs at least one student and one teacher view")
    dtype = _compute_dtype(student_out[0])
    log_p = [F.log_softmax(s.to(dtype) / student_temperature, dim=-1) for s in student_out]
    q = [F.softmax((t.to(dtype) - center.to(dtype)) / teacher_temperature, dim=-1).detach() for t in teacher_out]
    total, pairs = 0.0, 0
    for i, target in enumerate(q):
        for v, prediction in enumerate(log_p):
            if v == i:
                continue  # a view is not its own target
            total = total + (-target * prediction).sum(dim=-1).mean()
            pairs += 1
    if pairs == 0:
        raise ValueError("dino_loss: one view only; it needs a student view other than each teacher view")
    return total / pairs


def contrastive_loss(q: torch.Tensor, keys: torch.Tensor, offset: int, temperature: float) -> torch.Tensor:
    """MoCo v3's in-batch InfoNCE, as the official code computes it: a pure function.

    q: (n, D) queries; keys: (K, D) keys, the positive of query i at row offset + i (K >= offset + n).
    Both are L2-normalised here; keys are constants. Returns CE(q keys^T / T, offset + i) * 2T.
    """
    _check_temperature("contrastive_loss", temperature)
    dtype = _compute_dtype(q)
    q = F.normalize(q.to(dtype), dim=1)
    keys = F.normalize(keys.detach().to(dtype), dim=1)
    logits = q @ keys.T / temperature  # (n, K)
    labels = torch.arange(q.shape[0], device=q.device) + offset  # (n,)
    return F.cross_entropy(logits, labels) * (2 * temperature)
