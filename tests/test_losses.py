"""Tests for contrastive.losses.

Each vectorized loss is compared with a naive reference written straight from the
paper's definition, one anchor at a time with Python loops, in float64 (Python floats).
Closed-form cases, gradient flow, invariances, input validation and bfloat16 inputs
are checked separately.
"""

import math

import pytest
import torch

from contrastive.losses import (barlow_twins_loss, byol_loss, dino_loss, distillation_loss, info_nce, nt_xent,
                                simsiam_loss, vicreg_loss)

BATCH_SIZES = [1, 2, 5, 16]
DIMS = [2, 8, 128]
TEMPERATURES = [0.07, 0.1, 0.5, 1.0]


# --- naive references, one anchor at a time -------------------------------------------


def _normalized(vector):
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector]


def _dot(u, v):
    return sum(a * b for a, b in zip(u, v))


def naive_nt_xent(z1, z2, temperature):
    """SimCLR eq. 1: views 2k and 2k+1 are the two views of image k."""
    views = []
    for a, b in zip(z1.tolist(), z2.tolist()):
        views += [_normalized(a), _normalized(b)]
    total = 0.0
    for i in range(len(views)):
        positive = i + 1 if i % 2 == 0 else i - 1
        numerator = math.exp(_dot(views[i], views[positive]) / temperature)
        denominator = sum(
            math.exp(_dot(views[i], views[k]) / temperature) for k in range(len(views)) if k != i
        )
        total += -math.log(numerator / denominator)
    return total / len(views)


def naive_info_nce(q, k, queue, temperature):
    """MoCo eq. 1: one positive key, K negatives from the queue (used as given)."""
    negatives = queue.tolist()
    total = 0.0
    for query, key in zip(q.tolist(), k.tolist()):
        query, key = _normalized(query), _normalized(key)
        numerator = math.exp(_dot(query, key) / temperature)
        denominator = numerator + sum(math.exp(_dot(query, n) / temperature) for n in negatives)
        total += -math.log(numerator / denominator)
    return total / len(q)


def naive_byol(p, z):
    """BYOL eq. 2: squared distance between the unit vectors."""
    total = 0.0
    for prediction, target in zip(p.tolist(), z.tolist()):
        prediction, target = _normalized(prediction), _normalized(target)
        total += sum((a - b) ** 2 for a, b in zip(prediction, target))
    return total / len(p)


def _softmax(logits, temperature):
    exps = [math.exp(x / temperature) for x in logits]
    return [e / sum(exps) for e in exps]


def naive_distillation(student_logits, teacher_logits, temperature):
    """SimCLRv2 eq. 2: cross-entropy from the teacher's to the student's distribution."""
    total = 0.0
    for student, teacher in zip(student_logits.tolist(), teacher_logits.tolist()):
        p_teacher = _softmax(teacher, temperature)
        p_student = _softmax(student, temperature)
        total += -sum(t * math.log(s) for t, s in zip(p_teacher, p_student))
    return total / len(student_logits)


def _scalar(value):
    return torch.tensor(value, dtype=torch.float64)


def _orthonormal_rows(n, d, seed=0):
    """(n, d) rows that are orthonormal (n <= d), not aligned with the axes."""
    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return basis[:n]


# --- vectorized vs naive ----------------------------------------------------------------


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_nt_xent_matches_naive(batch, dim, temperature):
    gen = torch.Generator().manual_seed(batch * 1000 + dim)
    z1 = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    loss = nt_xent(z1, z2, temperature)
    torch.testing.assert_close(loss, _scalar(naive_nt_xent(z1, z2, temperature)))


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_info_nce_matches_naive(batch, dim, temperature):
    gen = torch.Generator().manual_seed(batch * 1000 + dim)
    q = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    k = q + 0.5 * torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    queue = torch.nn.functional.normalize(
        torch.randn(7, dim, generator=gen, dtype=torch.float64), dim=1
    )
    loss = info_nce(q, k, queue, temperature)
    torch.testing.assert_close(loss, _scalar(naive_info_nce(q, k, queue, temperature)))


def test_info_nce_does_not_normalize_the_queue():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    queue = 3.0 * torch.randn(5, 4, generator=gen, dtype=torch.float64)  # deliberately not unit
    loss = info_nce(q, k, queue, 0.5)
    torch.testing.assert_close(loss, _scalar(naive_info_nce(q, k, queue, 0.5)))


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_byol_matches_naive(batch, dim):
    gen = torch.Generator().manual_seed(batch * 1000 + dim)
    p, z = torch.randn(2, batch, dim, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(byol_loss(p, z), _scalar(naive_byol(p, z)))


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("classes", [2, 10])
@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_distillation_matches_naive(batch, classes, temperature):
    gen = torch.Generator().manual_seed(batch * 1000 + classes)
    student, teacher = torch.randn(2, batch, classes, generator=gen, dtype=torch.float64)
    loss = distillation_loss(student, teacher, temperature)
    torch.testing.assert_close(loss, _scalar(naive_distillation(student, teacher, temperature)))


# --- closed forms -----------------------------------------------------------------------


def test_nt_xent_single_pair_is_zero():
    # With N = 1 each anchor's denominator holds only its positive: -log(1) = 0.
    z1, z2 = torch.randn(2, 1, 8, generator=torch.Generator().manual_seed(0))
    assert nt_xent(z1, z2, 0.1).item() == 0.0


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("batch", [2, 3, 6])
def test_nt_xent_identical_orthogonal_views(batch, temperature):
    # Positive similarity 1, all 2(N - 1) negatives 0.
    z = _orthonormal_rows(batch, 6) * torch.tensor([0.5, 2.0, 3.0, 1.0, 7.0, 0.1])[:batch, None]
    expected = -math.log(math.exp(1 / temperature) / (math.exp(1 / temperature) + 2 * (batch - 1)))
    torch.testing.assert_close(nt_xent(z, z.clone(), temperature), _scalar(expected))


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_info_nce_orthogonal_queue(temperature):
    basis = _orthonormal_rows(8, 8)
    queue, q = basis[:5], basis[5:]  # K = 5 negatives, each orthogonal to every query
    expected = -math.log(math.exp(1 / temperature) / (math.exp(1 / temperature) + 5))
    torch.testing.assert_close(info_nce(q, q.clone(), queue, temperature), _scalar(expected))


def test_byol_closed_forms():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4, 8, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(byol_loss(z.clone(), z), _scalar(0.0))
    torch.testing.assert_close(byol_loss(-z, z), _scalar(4.0))
    rows = _orthonormal_rows(2, 8)
    torch.testing.assert_close(byol_loss(rows[:1], rows[1:]), _scalar(2.0))


def test_byol_invariant_to_positive_scaling():
    gen = torch.Generator().manual_seed(0)
    p, z = torch.randn(2, 4, 8, generator=gen, dtype=torch.float64)
    scale_p = torch.rand(4, 1, generator=gen, dtype=torch.float64) * 10 + 0.01
    scale_z = torch.rand(4, 1, generator=gen, dtype=torch.float64) * 10 + 0.01
    torch.testing.assert_close(byol_loss(p * scale_p, z * scale_z), byol_loss(p, z))


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_distillation_of_a_teacher_onto_itself_is_its_entropy(temperature):
    teacher = torch.randn(3, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    probs = torch.softmax(teacher / temperature, dim=1)
    entropy = -(probs * probs.log()).sum(dim=1).mean()
    torch.testing.assert_close(distillation_loss(teacher.clone(), teacher, temperature), entropy)


def test_distillation_of_uniform_logits_is_log_classes():
    logits = torch.full((4, 10), 3.0, dtype=torch.float64)
    torch.testing.assert_close(distillation_loss(logits, logits, 0.7), _scalar(math.log(10)))


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_distillation_gradient_closed_form(temperature):
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 4, generator=gen, dtype=torch.float64)
    student.requires_grad_(True)
    distillation_loss(student, teacher, temperature).backward()
    expected = (
        torch.softmax(student.detach() / temperature, dim=1)
        - torch.softmax(teacher / temperature, dim=1)
    ) / temperature / student.shape[0]
    torch.testing.assert_close(student.grad, expected)


# --- gradient flow ------------------------------------------------------------------------


def test_nt_xent_gradient_reaches_both_views():
    gen = torch.Generator().manual_seed(0)
    z1 = torch.randn(4, 8, generator=gen, requires_grad=True)
    z2 = torch.randn(4, 8, generator=gen, requires_grad=True)
    nt_xent(z1, z2).backward()
    assert z1.grad is not None and z1.grad.abs().sum() > 0
    assert z2.grad is not None and z2.grad.abs().sum() > 0


def test_nt_xent_masked_self_similarity_gives_finite_gradients():
    # The -inf on the diagonal must not leak NaNs into the gradient, even for N = 1.
    for batch in (1, 3):
        z1 = torch.randn(batch, 4, dtype=torch.float64, requires_grad=True)
        z2 = torch.randn(batch, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a, b: nt_xent(a, b, 0.3), (z1, z2))


def test_byol_gradient_reaches_only_the_prediction():
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(4, 8, generator=gen, requires_grad=True)
    z = torch.randn(4, 8, generator=gen, requires_grad=True)
    byol_loss(p, z).backward()
    assert z.grad is None
    assert p.grad is not None and p.grad.abs().sum() > 0


def test_info_nce_gradient_reaches_only_the_query():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(4, 8, generator=gen, requires_grad=True)
    k = torch.randn(4, 8, generator=gen, requires_grad=True)
    queue = torch.randn(6, 8, generator=gen, requires_grad=True)
    info_nce(q, k, queue).backward()
    assert k.grad is None and queue.grad is None
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_distillation_gradient_reaches_only_the_student():
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(4, 5, generator=gen, requires_grad=True)
    teacher = torch.randn(4, 5, generator=gen, requires_grad=True)
    distillation_loss(student, teacher, 1.0).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


# --- invariance ---------------------------------------------------------------------------


def test_nt_xent_invariant_to_positive_scaling():
    gen = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(2, 5, 8, generator=gen, dtype=torch.float64)
    scale1 = torch.rand(5, 1, generator=gen, dtype=torch.float64) * 10 + 0.01
    scale2 = torch.rand(5, 1, generator=gen, dtype=torch.float64) * 10 + 0.01
    torch.testing.assert_close(nt_xent(z1 * scale1, z2 * scale2, 0.1), nt_xent(z1, z2, 0.1))


def test_info_nce_invariant_to_scaling_queries_and_keys():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 5, 8, generator=gen, dtype=torch.float64)
    queue = torch.nn.functional.normalize(torch.randn(6, 8, generator=gen, dtype=torch.float64))
    scale_q = torch.rand(5, 1, generator=gen, dtype=torch.float64) * 10 + 0.01
    scale_k = torch.rand(5, 1, generator=gen, dtype=torch.float64) * 10 + 0.01
    torch.testing.assert_close(
        info_nce(q * scale_q, k * scale_k, queue), info_nce(q, k, queue)
    )


# --- input validation ---------------------------------------------------------------------

_A, _B = torch.zeros(4, 8), torch.zeros(4, 9)


@pytest.mark.parametrize(
    "call",
    [
        lambda: nt_xent(_A, _B),
        lambda: nt_xent(torch.zeros(8), torch.zeros(8)),
        lambda: info_nce(_A, _B, torch.zeros(3, 8)),
        lambda: info_nce(_A, _A, torch.zeros(3, 9)),
        lambda: byol_loss(_A, _B),
        lambda: distillation_loss(_A, _B, 1.0),
    ],
    ids=["nt_xent", "nt_xent_1d", "info_nce_qk", "info_nce_queue", "byol", "distillation"],
)
def test_shape_mismatch_raises(call):
    with pytest.raises(ValueError, match="shape"):
        call()


def test_shape_mismatch_message_names_both_shapes():
    with pytest.raises(ValueError, match=r"nt_xent: z1 and z2 .* got \(4, 8\) and \(4, 9\)"):
        nt_xent(_A, _B)


@pytest.mark.parametrize("temperature", [0.0, -0.1, float("nan")])
@pytest.mark.parametrize(
    "loss",
    [
        lambda t: nt_xent(_A, _A, t),
        lambda t: info_nce(_A, _A, torch.zeros(3, 8), t),
        lambda t: distillation_loss(_A, _A, t),
    ],
    ids=["nt_xent", "info_nce", "distillation"],
)
def test_non_positive_temperature_raises(loss, temperature):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        loss(temperature)


# --- precision ----------------------------------------------------------------------------

# Each case takes two (N, D) tensors and a (K, D) unit-norm queue, used by info_nce only.
_CASES = {
    "nt_xent": lambda a, b, queue: nt_xent(a, b, 0.1),
    "info_nce": lambda a, b, queue: info_nce(a, b, queue, 0.2),
    "byol": lambda a, b, queue: byol_loss(a, b),
    "distillation": lambda a, b, queue: distillation_loss(a, b, 0.5),
}


@pytest.mark.parametrize("name", list(_CASES))
def test_bfloat16_inputs_are_computed_in_float32(name):
    loss = _CASES[name]
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 16, 32, generator=gen)
    c = torch.nn.functional.normalize(torch.randn(24, 32, generator=gen), dim=1)
    low = [x.to(torch.bfloat16) for x in (a, b, c)]
    result = loss(*low)
    assert result.dtype == torch.float32
    # Exactly the float32 computation on the rounded inputs...
    torch.testing.assert_close(result, loss(*[x.float() for x in low]), rtol=1e-6, atol=1e-6)
    # ...and close to the float32 computation on the original inputs.
    torch.testing.assert_close(result, loss(a, b, c), rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("name", list(_CASES))
def test_float64_inputs_stay_float64(name):
    loss = _CASES[name]
    a, b = torch.randn(2, 4, 8, dtype=torch.float64)
    c = torch.randn(5, 8, dtype=torch.float64)
    assert loss(a, b, c).dtype == torch.float64



# --- Barlow Twins, VICReg, SimSiam, DINO: naive references from the papers' pseudocode ------------


def naive_barlow_twins(z1, z2, lambda_):
    """Algorithm 1 of Zbontar et al. 2021, one entry at a time."""
    n, d = z1.shape

    def standardise(z):
        out = []
        for j in range(d):
            column = [float(z[i, j]) for i in range(n)]
            mean = sum(column) / n
            var = sum((x - mean) ** 2 for x in column) / n  # biased, as BatchNorm
            out.append([(x - mean) / math.sqrt(var + 1e-5) for x in column])
        return out  # out[j][i]

    a, b = standardise(z1), standardise(z2)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[i][k] * b[j][k] for k in range(n)) / n
            loss += (1 - c) ** 2 if i == j else lambda_ * c ** 2
    return loss


def naive_vicreg(z1, z2, sim_weight, var_weight, cov_weight, eps):
    n, d = z1.shape
    invariance = sum(float(z1[i, j] - z2[i, j]) ** 2 for i in range(n) for j in range(d)) / (n * d)

    def terms(z):
        means = [sum(float(z[i, j]) for i in range(n)) / n for j in range(d)]
        centred = [[float(z[i, j]) - means[j] for j in range(d)] for i in range(n)]
        var = [sum(centred[i][j] ** 2 for i in range(n)) / (n - 1) for j in range(d)]
        hinge = sum(max(0.0, 1 - math.sqrt(v + eps)) for v in var) / d
        cov = 0.0
        for a in range(d):
            for b in range(d):
                if a != b:
                    cov += (sum(centred[i][a] * centred[i][b] for i in range(n)) / (n - 1)) ** 2
        return hinge, cov / d

    (h1, c1), (h2, c2) = terms(z1), terms(z2)
    return sim_weight * invariance + var_weight * (h1 + h2) / 2 + cov_weight * (c1 + c2)


def naive_simsiam(p, z):
    return -sum(_dot(_normalized(p[i]), _normalized(z[i])) for i in range(p.shape[0])) / p.shape[0]


def naive_dino(student, teacher, center, ts, tt):
    total, pairs = 0.0, 0
    for i, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == i:
                continue
            batch = 0.0
            for b in range(t.shape[0]):
                q = _softmax([float(x - c) for x, c in zip(t[b], center)], tt)
                log_p = [math.log(x) for x in _softmax([float(x) for x in s[b]], ts)]
                batch += -sum(qk * lk for qk, lk in zip(q, log_p))
            total += batch / t.shape[0]
            pairs += 1
    return total / pairs


@pytest.mark.parametrize("batch,dim,lambda_", [(4, 3, 5e-3), (8, 5, 0.1), (16, 2, 1.0)])
def test_barlow_twins_matches_naive(batch, dim, lambda_):
    g = torch.Generator().manual_seed(batch * dim)
    z1, z2 = torch.randn(batch, dim, generator=g, dtype=torch.float64), torch.randn(batch, dim, generator=g,
                                                                                   dtype=torch.float64)
    expected = float(naive_barlow_twins(z1, z2, lambda_))
    assert float(barlow_twins_loss(z1, z2, lambda_)) == pytest.approx(expected, rel=1e-9)


def test_barlow_twins_closed_forms():
    # Columns of variance 1, orthogonal over the batch with zero mean: c = I / (1 + eps) for identical views
    # (loss ~0: only BatchNorm's eps keeps c_ii below 1) and -I / (1 + eps) for opposite ones (each diagonal
    # term ~(1 - (-1))^2 = 4); no off-diagonal term in either case.
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    assert float(barlow_twins_loss(z, z)) == pytest.approx(2 * (1 - 1 / (1 + 1e-5)) ** 2, rel=1e-6)
    assert float(barlow_twins_loss(z, -z)) == pytest.approx(2 * (1 + 1 / (1 + 1e-5)) ** 2, rel=1e-9)
    # Invariant to a per-dimension affine change of either view (the standardisation removes it), up to
    # BatchNorm's eps, which weighs differently on a rescaled dimension (hence rel 1e-4).
    a = torch.randn(8, 3, dtype=torch.float64)
    b = torch.randn(8, 3, dtype=torch.float64)
    scaled = b * torch.tensor([2.0, 5.0, 0.5], dtype=torch.float64) + 3.0
    assert float(barlow_twins_loss(a, scaled)) == pytest.approx(float(barlow_twins_loss(a, b)), rel=1e-4)


@pytest.mark.parametrize("batch,dim", [(3, 2), (8, 4), (16, 3)])
def test_vicreg_matches_naive(batch, dim):
    g = torch.Generator().manual_seed(batch + dim)
    z1, z2 = (torch.randn(batch, dim, generator=g, dtype=torch.float64) * 0.7 for _ in range(2))
    for weights in ((25.0, 25.0, 1.0, 1e-4), (1.0, 2.0, 3.0, 1e-2)):
        expected = float(naive_vicreg(z1, z2, *weights))
        assert float(vicreg_loss(z1, z2, *weights)) == pytest.approx(expected, rel=1e-9)


def test_vicreg_closed_forms():
    # Identical views with uncorrelated dimensions of std >= 1: every term is 0.
    z = torch.tensor([[2.0, 2.0], [2.0, -2.0], [-2.0, 2.0], [-2.0, -2.0]], dtype=torch.float64)
    assert float(vicreg_loss(z, z)) == pytest.approx(0.0, abs=1e-12)
    # A collapsed view (all rows equal): the variance hinge is 1 - sqrt(eps) on every dimension, for one of
    # the two views, and the invariance term is the mean squared distance.
    collapsed = torch.zeros_like(z)
    expected = 25.0 * (z ** 2).mean() + 25.0 * (1 - math.sqrt(1e-4)) / 2
    assert float(vicreg_loss(z, collapsed)) == pytest.approx(float(expected), rel=1e-9)


def test_simsiam_matches_naive_closed_forms_and_stops_the_gradient():
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, 4, generator=g, dtype=torch.float64)
    assert float(simsiam_loss(p, z)) == pytest.approx(float(naive_simsiam(p, z)), rel=1e-9)
    assert float(simsiam_loss(p, 3 * p)) == pytest.approx(-1.0)
    assert float(simsiam_loss(p, -p)) == pytest.approx(1.0)
    p, z = p.clone().requires_grad_(True), z.clone().requires_grad_(True)
    simsiam_loss(p, z).backward()
    assert z.grad is None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("globals_,locals_", [(2, 0), (2, 3), (1, 2)])
def test_dino_matches_naive(globals_, locals_):
    g = torch.Generator().manual_seed(globals_ * 10 + locals_)
    k, b = 5, 3
    teacher = [torch.randn(b, k, generator=g, dtype=torch.float64) for _ in range(globals_)]
    student = [torch.randn(b, k, generator=g, dtype=torch.float64) for _ in range(globals_ + locals_)]
    center = torch.randn(k, generator=g, dtype=torch.float64)
    got = float(dino_loss(student, teacher, center, 0.1, 0.04))
    assert got == pytest.approx(float(naive_dino(student, teacher, center, 0.1, 0.04)), rel=1e-9)


def test_dino_closed_form_and_teacher_detached():
    # A uniform teacher (every logit equal after centering) and a uniform student: the cross-entropy is log K.
    k = 7
    teacher = [torch.full((4, k), 2.0), torch.full((4, k), 2.0)]
    student = [torch.zeros(4, k, requires_grad=True) for _ in range(4)]
    loss = dino_loss(student, teacher, torch.full((k,), 2.0))
    assert float(loss) == pytest.approx(math.log(k), rel=1e-6)
    teacher = [t.clone().requires_grad_(True) for t in teacher]
    dino_loss(student, teacher, torch.zeros(k)).backward()
    assert all(t.grad is None for t in teacher) and student[0].grad is not None
    with pytest.raises(ValueError, match="one view only"):
        dino_loss([torch.zeros(2, k)], [torch.zeros(2, k)], torch.zeros(k))



def test_barlow_twins_and_vicreg_stay_in_float32_under_bf16_autocast():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(32, 6, generator=g), torch.randn(32, 6, generator=g)
    for loss in (barlow_twins_loss, vicreg_loss):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = loss(z1.bfloat16(), z2.bfloat16())
        assert low.dtype == torch.float32
        assert float(low) == pytest.approx(float(loss(z1.bfloat16().float(), z2.bfloat16().float())), rel=1e-6)
