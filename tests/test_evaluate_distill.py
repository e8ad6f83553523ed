"""Distillation (contrastive/evaluate/distill.py): the objective, the teacher's entropy, the views."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastive.errors import ContrastiveError
from contrastive.evaluate.distill import distill, distillation_objective
from contrastive.evaluate.fit import Budget, fit_classifier
from contrastive.image.data import ImageSet
from contrastive.losses import distillation_loss
from helpers import CHANNELS, READER, SIZE, assert_same_state, state, tiny_classifier


# --- distillation ---------------------------------------------------------------------------------

def test_distillation_objective_mixes_labels_only_when_asked():
    g = torch.Generator().manual_seed(0)
    student, teacher_logits = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    labels = torch.tensor([0, -1, 2, -1, 3, 1])
    teacher = nn.Identity()  # "images" are the teacher's logits here
    pure = distillation_objective(teacher, 2.0, 0.0)(student, labels, teacher_logits)
    assert torch.allclose(pure, distillation_loss(student, teacher_logits, 2.0))
    known = labels >= 0
    ce = F.cross_entropy(student[known], labels[known])
    assert torch.allclose(distillation_objective(teacher, 2.0, 1.0)(student, labels, teacher_logits), ce)
    mixed = distillation_objective(teacher, 2.0, 0.3)(student, labels, teacher_logits)
    assert torch.allclose(mixed, 0.3 * ce + 0.7 * pure)


def cross_entropy_to(teacher, student, images, temperature=1.0):
    """(H(p_T, p_S), H(p_T)) on one batch, both networks in eval mode."""
    with torch.no_grad():
        t, s = teacher(images), student(images)
    p_t = F.softmax(t / temperature, dim=1)
    entropy = -(p_t * F.log_softmax(t / temperature, dim=1)).sum(1).mean().item()
    return distillation_loss(s, t, temperature).item(), entropy


@pytest.fixture
def teacher(tiny_data):
    model = tiny_classifier(seed=1)
    acc = fit_classifier(model, tiny_data.train, tiny_data.test, READER, epochs=40, batch_size=16, lr=0.05,
                         augment=False)
    assert acc >= 0.7
    return model, acc


def test_distillation_drives_the_loss_to_the_teachers_entropy(tiny_data, teacher):
    teacher, teacher_acc = teacher
    batch = tiny_data.train.subset(range(32))
    images = torch.stack([(img.float() / 255 - 0.1307) / 0.3081 for img, _ in batch])  # eval_transform at 16 px
    student = tiny_classifier(seed=2)
    teacher_before = state(teacher)
    # At T=3 the trained teacher's targets are soft (entropy ~0.65 nats of log 4 = 1.39), so
    # matching them is more than fitting its argmax.
    before, entropy = cross_entropy_to(teacher, student, images, temperature=3.0)
    budget = Budget(epochs=150, min_steps=0, batch_size=32, lr=0.05, augment=False)  # one fixed batch
    student, acc = distill(teacher, student, batch, tiny_data.test, READER, temperature=3.0, budget=budget)
    after, _ = cross_entropy_to(teacher, student, images, temperature=3.0)
    assert entropy > 0.3 and before - entropy > 0.3
    assert after - entropy < 0.15 * (before - entropy)  # the minimum of H(p_T, p_S) over p_S is H(p_T)
    assert acc >= teacher_acc - 0.15
    assert not teacher.training
    assert_same_state(state(teacher), teacher_before)  # a constant: no step, no BN statistics update


def test_distillation_with_alpha_zero_never_reads_labels(tiny_data, teacher):
    teacher, _ = teacher
    train = tiny_data.train
    garbage = train.with_labels(torch.randint(0, 4, (len(train),), generator=torch.Generator().manual_seed(5)))
    unlabelled = ImageSet(images=train.images)  # labels None: every item says -1
    budget = Budget(epochs=2, min_steps=0, batch_size=16, lr=0.05, augment=True)
    start = tiny_classifier(seed=4)
    students = [distill(teacher, copy.deepcopy(start), data, None, READER, budget=budget, seed=3)[0]
                for data in (train, garbage, unlabelled)]
    for other in students[1:]:
        assert_same_state(state(students[0]), state(other))
    # The check can fail: with a label term, garbage labels give another student.
    mixed = [distill(teacher, copy.deepcopy(start), data, None, READER, budget=budget, seed=3, alpha=0.5,
                     labeled_mask=torch.ones(len(train), dtype=torch.bool))[0] for data in (train, garbage)]
    assert not torch.equal(mixed[0].fc.weight, mixed[1].fc.weight)
    with pytest.raises(ContrastiveError, match="labeled_mask"):
        distill(teacher, copy.deepcopy(start), train, None, READER, budget=budget, alpha=0.5)


def test_distill_views_give_the_teacher_the_clean_item_and_the_student_a_strong_view(tiny_data):
    from contrastive.batches import batches
    from contrastive.evaluate.distill import distill_views
    from contrastive.image.augment import strong_recipe

    train = tiny_data.train
    order = torch.arange(8)

    def first_batch(views):
        return next(iter(batches(train, views, order, 8, torch.device("cpu"), epoch_seed=0)))[0]

    clean = first_batch(READER.eval_views(train))[0]
    same = first_batch(distill_views(READER, train, "light", "same"))
    assert len(same) == 1 and not torch.equal(same[0], clean)  # SimCLRv2: one augmented batch for both
    noisy = first_batch(distill_views(READER, train, "strong", "clean"))
    assert len(noisy) == 2 and torch.equal(noisy[1], clean) and not torch.equal(noisy[0], clean)
    assert first_batch(distill_views(READER, train, "light", "same", augment=False))[0].equal(clean)
    assert strong_recipe(SIZE, CHANNELS).warp is not None  # small digits: handwriting's warp
    with pytest.raises(ContrastiveError, match="teacher one of"):
        distill_views(READER, train, "light", "blurry")
