"""The self-supervised losses, as pure functions of tensors.

Nothing here knows about models, devices, optimizers or torch.distributed: each function
takes embeddings (or logits) and returns a scalar loss. Inputs in a low precision such as
bfloat16 are cast up, so the arithmetic is always at least float32. Anything the paper
treats as a constant (MoCo's keys and queue, BYOL's target, the distillation teacher) is
detached here, so callers cannot forget to.

Shape notation: N is the batch size, D the embedding width, K the MoCo queue length and
C the number of classes.
"""

import math
from collections.abc import Callable

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
    pairs = len(teacher_out) * len(student_out) - min(len(teacher_out), len(student_out))
    if pairs == 0:
        raise ValueError("dino_loss: one view only; it needs a student view other than each teacher view")
    q = [F.softmax((t.to(dtype) - center.to(dtype)) / teacher_temperature, dim=-1).detach() for t in teacher_out]
    # Every teacher view i is a target of every student view v != i, so student view v meets the sum of
    # the targets minus its own: one (B, K) product per student view rather than one per pair (with
    # K = 65536 these elementwise products were a quarter of a CPU step; BENCHMARKS.md, DINO loss).
    q_sum = torch.stack(q).sum(dim=0)
    total = 0.0
    for v, s in enumerate(student_out):
        target = q_sum - q[v] if v < len(q) else q_sum
        total = total - (target * F.log_softmax(s.to(dtype) / student_temperature, dim=-1)).sum(dim=-1).mean()
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


# --- clusters (SwAV), mutual-information bounds (Deep InfoMax) and predictive coding (CPC) ---------


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3,
                   total: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """SwAV's online codes (Caron et al. 2020, sec. 3.1 and Algorithm 1; official distributed_sinkhorn).

    scores: (B, K) similarities of B embeddings to K prototypes. Q = exp(scores / epsilon)^T
    (K, B) is rescaled so that it sums to 1, then `iterations` times its rows are made to sum
    to 1/K (equal use of the prototypes) and its columns to 1/B; the codes are B Q^T, (B, K),
    each row a distribution over the prototypes. `total(t)` sums a tensor over the batches
    of every process (torch.distributed's all-reduce), so that B and the row sums are those
    of the global batch; the identity by default (one process). The codes are constants.
    epsilon 0.05 and 3 iterations are the paper's (sec. 4 and appendix A).
    """
    total = total or (lambda t: t)
    dtype = _compute_dtype(scores)
    q = torch.exp(scores.detach().to(dtype) / epsilon).T  # (K, B); scores are cosines, exp(1 / 0.05) fits float32
    k = q.shape[0]
    b = total(torch.tensor(float(q.shape[1]), dtype=dtype, device=q.device))  # the global batch
    q = q / total(q.sum())
    for _ in range(iterations):
        q = q / total(q.sum(dim=1, keepdim=True)) / k  # rows: each prototype gets mass 1/K
        q = q / q.sum(dim=0, keepdim=True) / b  # columns: each embedding gets mass 1/B (its own rank's)
    return (q * b).T  # (B, K), rows sum to 1


def swapped_prediction_loss(scores: list[torch.Tensor], codes: list[torch.Tensor],
                            temperature: float = 0.1) -> torch.Tensor:
    """SwAV's swapped prediction (Caron et al. 2020, eq. 1-2, with multi-crop as in the official code).

    scores: one (B, K) prototype-score tensor per crop; codes: one (B, K) code per crop whose
    code is computed (crops 0, 1, ... in order: the global crops). For every code q_i and every
    other crop v, the cross-entropy -sum_k q_ik log softmax(scores_v / T)_k, averaged over the
    batch and the crops v != i, then over the codes. Codes are constants.
    """
    _check_temperature("swapped_prediction_loss", temperature)
    if len(scores) < 2 or not codes or len(codes) > len(scores):
        raise ValueError("swapped_prediction_loss: needs at least two crops and one code per assigned crop")
    dtype = _compute_dtype(scores[0])
    log_p = [F.log_softmax(s.to(dtype) / temperature, dim=1) for s in scores]
    loss = 0.0
    for i, q in enumerate(codes):
        q = q.detach().to(dtype)
        loss = loss + sum(-(q * log_p[v]).sum(dim=1).mean() for v in range(len(scores)) if v != i) / (len(scores) - 1)
    return loss / len(codes)


def jsd_mutual_information(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Deep InfoMax's Jensen-Shannon MI estimator (Hjelm et al. 2019, eq. 4), with the official code's
    log 2 offsets:

        I_JSD = E_P[log 2 - sp(-T(x, y))] - E_{P x P~}[sp(T(x', y)) - log 2],   sp = softplus

    positive: scores T of pairs drawn from the joint (a local feature and its own image's
    global feature), any shape; negative: scores of pairs from the product of the marginals
    (another image's global feature). Returns the estimate; it lies in [-inf, 2 log 2], is 0
    when every score is 0 and reaches 2 log 2 when the scores separate perfectly. The loss is
    its negative.
    """
    dtype = _compute_dtype(positive)
    log2 = math.log(2.0)
    e_joint = (log2 - F.softplus(-positive.to(dtype))).mean()
    e_marginal = (F.softplus(negative.to(dtype)) - log2).mean()
    return e_joint - e_marginal


def _local_global_scores(loss: str, local: torch.Tensor, global_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Deep InfoMax's dot-product scores of every item's locations against every item's global feature,
    (N, N, L) with [i, k, l] = local_il . global_k, and the (N, N) mask of the positives (k = i). Checks
    the shapes (local (N, D, L), global (N, D)) and that the batch has negatives."""
    if local.dim() != 3 or global_.dim() != 2 or local.shape[:2] != global_.shape:
        raise ValueError(f"{loss}: local (N, D, L) and global (N, D), got {tuple(local.shape)} "
                         f"and {tuple(global_.shape)}")
    n = local.shape[0]
    if n < 2:
        raise ValueError(f"{loss}: the negatives need a batch of at least 2")
    dtype = _compute_dtype(local)
    scores = torch.einsum("idl,kd->ikl", local.to(dtype), global_.to(dtype))
    return scores, torch.eye(n, dtype=torch.bool, device=local.device)


def local_global_jsd_loss(local: torch.Tensor, global_: torch.Tensor) -> torch.Tensor:
    """Local Deep InfoMax (Hjelm et al. 2019, sec. 3.2, eq. 5 with the JSD estimator): -I_JSD averaged
    over locations, with the encode-and-dot-product scores T(local_ij, global_k) = local_ij . global_k.

    local: (N, D, L) embedded local features (L locations per item); global_: (N, D) embedded
    global features. The positives are (location j of item i, global i); the negatives pair
    every location of item i with the global feature of every other item k != i.
    """
    scores, same = _local_global_scores("local_global_jsd_loss", local, global_)
    return -jsd_mutual_information(scores[same], scores[~same])


# AMDIM's score stabilisers (Bachman et al. 2019; official costs.py): scores divided by sqrt(dimension), their
# mean square times 0.05 added to the loss, then soft-clipped to [-10, 10] by 10 tanh(s / 10).
AMDIM_CLIP = 10.0
AMDIM_PENALTY = 0.05


def local_global_nce_loss(local: torch.Tensor, global_: torch.Tensor, stabilise: bool = False) -> torch.Tensor:
    """Local Deep InfoMax with the noise-contrastive (InfoNCE) estimator (Hjelm et al. 2019, sec. 3.1,
    eq. 5, one of the paper's three MI estimators beside JSD and Donsker-Varadhan).

    Each location j of item i is a positive for item i's global feature; its negatives are
    every location of every other item, scored against the same global feature i:

        L = -mean_{i,j} log  exp(s(l_ij, g_i)) / (exp(s(l_ij, g_i)) + sum_{k != i, m} exp(s(l_km, g_i)))

    with s the dot product. local: (N, D, L); global_: (N, D). Since the negatives depend on i
    only, the sum is one log-sum-exp per item: L = mean softplus(lse_i - s(l_ij, g_i)).

    stabilise: AMDIM's form of the scores, s = c tanh(l . g / (sqrt(D) c)) with c = AMDIM_CLIP,
    and AMDIM_PENALTY times the mean of (l . g / sqrt(D))^2 over all scores added to the loss.
    """
    scores, same = _local_global_scores("local_global_nce_loss", local, global_)
    penalty = 0.0
    if stabilise:
        scores = scores / math.sqrt(local.shape[1])
        penalty = AMDIM_PENALTY * scores.square().mean()
        scores = AMDIM_CLIP * torch.tanh(scores / AMDIM_CLIP)
    scores = scores.transpose(0, 1)  # (N, N, L): global i x item k's locations
    positive = scores[same]  # (N, L): item i's own locations against global i
    negative = scores.masked_fill(same[:, :, None], float("-inf")).flatten(1).logsumexp(dim=1)  # (N,)
    return F.softplus(negative[:, None] - positive).mean() + penalty


def cpc_info_nce(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """CPC's InfoNCE (van den Oord et al. 2018, eq. 4; Hénaff et al. 2020, eq. 3 and 5).

        L = -mean_i log  exp(p_i . z_i) / sum_j exp(p_i . z_j)

    predictions: (M, D) predicted latents W_k c_t; targets: (M, D) the latents z_{t+k} they
    predict, row i the positive of prediction i and every other row a negative (other
    positions and other items of the batch). The score is the plain dot product, as in
    both papers (no normalisation, no temperature).
    """
    _check_same_2d_shape("cpc_info_nce", "predictions", predictions, "targets", targets)
    dtype = _compute_dtype(predictions)
    logits = predictions.to(dtype) @ targets.to(dtype).T  # (M, M)
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))
