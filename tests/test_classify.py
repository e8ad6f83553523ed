"""Linear probe, checkpoint loading, fine-tuning, the supervised loop and distillation, on tiny data."""

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastive.config import KnnConfig, PretrainConfig
from contrastive.errors import ContrastiveError
from contrastive.evaluate.classifier import Classifier, classifier_from, out_features, random_classifier
from contrastive.evaluate.distill import distill, distillation_objective
from contrastive.evaluate.finetune import finetune, supervised_baseline
from contrastive.evaluate.fit import Budget, evaluate_accuracy, fit_classifier
from contrastive.evaluate.pretrained import check_compatible, load_pretrained
from contrastive.evaluate.probe import linear_probe
from contrastive.heads import simclr_head
from contrastive.image.backbones import small_cnn
from contrastive.image.data import ImageSet
from contrastive.losses import distillation_loss
from contrastive.modality import Reader
from contrastive.train import pretrain

from conftest import make_splits

SIZE, CHANNELS = 16, 1  # tiny_data: 16 px one-channel squares, 4 classes, 64 train / 32 test
READER = Reader("image", {"channels": CHANNELS, "image_size": SIZE, "cifar_stem": False})
# What pretraining on tiny_data records: its options resolve to the data's 16 px and, at 64 px or less, the CIFAR stem.
PRETRAINED_READER = Reader("image", {"channels": CHANNELS, "image_size": SIZE, "cifar_stem": True})
METHOD_OPTIONS = {"simclr": {"proj_hidden": 32}, "byol": {"proj_hidden": 32, "pred_hidden": 32}}


def quiet(*_):
    pass


def tiny_classifier(seed=0, num_classes=4):
    torch.manual_seed(seed)
    encoder, feat_dim = small_cnn(CHANNELS, width=4)
    return Classifier(encoder, feat_dim, num_classes)


def state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def checkpoint(tmp_path, data, method="simclr"):
    cfg = PretrainConfig(method=method, backbone="small_cnn", epochs=1, batch_size=16, out=str(tmp_path / method),
                         method_options=METHOD_OPTIONS[method], knn=KnnConfig(k=10, every=0))
    run = pretrain(cfg, data=data, log=quiet).run_dir
    return run / "checkpoint-epoch0001.pt"


# --- linear probe ---------------------------------------------------------------------------

def test_linear_probe_separates_linearly_separable_classes(tiny_data):
    acc = linear_probe(nn.Flatten(), tiny_data.train, tiny_data.test, 4, READER)
    assert acc >= 0.9  # chance is 0.25


def test_linear_probe_on_constant_features_is_at_chance(tiny_data):
    class Blind(nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 8)

    acc = linear_probe(Blind(), tiny_data.train, tiny_data.test, 4, READER)
    assert acc <= 0.3  # nothing to learn from: the labels must not leak in another way


def test_linear_probe_leaves_the_encoder_bitwise_unchanged(tiny_data):
    encoder, _ = small_cnn(CHANNELS, width=4)
    encoder(torch.randn(8, CHANNELS, SIZE, SIZE))  # train mode: BN running stats move away from their init
    encoder.train()
    before = state(encoder)
    linear_probe(encoder, tiny_data.train, tiny_data.test, 4, READER, epochs=5)
    assert_same_state(state(encoder), before)  # weights and BN running mean / var / count
    assert encoder.training


# --- loading checkpoints -------------------------------------------------------------------------

def test_load_pretrained_simclr_gives_encoder_and_first_head_layer(tmp_path, tiny_data):
    path = checkpoint(tmp_path, tiny_data, "simclr")
    ckpt = torch.load(path, weights_only=True)
    pre = load_pretrained(path)
    assert pre.feat_dim == 128 and pre.config["method"] == "simclr"
    assert pre.reader == PRETRAINED_READER and pre.data == {"name": "tiny", "num_classes": 4,
                                                            "classes": ["0", "1", "2", "3"]}
    assert pre.record["neck"] == {"prefix": "projector.", "keep": 1,
                                  "mlp": dict(in_dim=128, hidden_dim=32, out_dim=128, num_layers=3, batch_norm=True,
                                              last_bn=True)}
    encoder_state = {k[len("encoder."):]: v for k, v in ckpt["model"].items() if k.startswith("encoder.")}
    assert_same_state(pre.encoder.state_dict(), encoder_state)
    reference = simclr_head(128, 32, 128, 3)[:1]
    assert str(pre.head) == str(reference)  # Linear(128, 32) -> BN -> ReLU
    assert pre.head[0][0].weight.shape == (32, 128) and out_features(pre.head) == 32
    head_state = {k[len("projector."):]: v for k, v in ckpt["model"].items() if k.startswith("projector.0.")}
    assert_same_state(pre.head.state_dict(), head_state)


def test_load_pretrained_byol_has_no_head(tmp_path, tiny_data):
    pre = load_pretrained(checkpoint(tmp_path, tiny_data, "byol"))
    assert pre.head is None and pre.feat_dim == 128 and pre.record["neck"] is None


def test_load_pretrained_errors_are_one_line(tmp_path, tiny_data):
    with pytest.raises(ContrastiveError, match="does not exist") as missing:
        load_pretrained(tmp_path / "nope.pt")
    path = checkpoint(tmp_path, tiny_data, "simclr")
    ckpt = torch.load(path, weights_only=True)
    narrower, _ = small_cnn(CHANNELS, width=16)  # the config still says small_cnn (width 32)
    ckpt["model"] = {k: v for k, v in ckpt["model"].items() if not k.startswith("encoder.")}
    ckpt["model"].update({f"encoder.{k}": v for k, v in narrower.state_dict().items()})
    torch.save(ckpt, tmp_path / "tampered.pt")
    with pytest.raises(ContrastiveError, match="does not match backbone small_cnn") as tampered:
        load_pretrained(tmp_path / "tampered.pt")
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}, "config": {}}, tmp_path / "other.pt")
    with pytest.raises(ContrastiveError, match="not a pretraining checkpoint") as other:
        load_pretrained(tmp_path / "other.pt")
    for err in (missing, tampered, other):
        assert "\n" not in str(err.value)
    assert "tampered.pt" in str(tampered.value) and "other.pt" in str(other.value)


def test_check_compatible_rejects_other_channel_counts(tmp_path, tiny_data):
    pre = load_pretrained(checkpoint(tmp_path, tiny_data, "simclr"))
    check_compatible(pre, tiny_data)
    colour = dataclasses.replace(make_splits(channels=3), name="cifar10:/data")
    with pytest.raises(ContrastiveError, match="1-channel images.*has 3") as err:
        check_compatible(pre, colour)
    assert "\n" not in str(err.value) and "cifar10:/data" in str(err.value)


# --- fine-tuning ------------------------------------------------------------------------------

def test_finetune_starts_from_the_head_layer_and_leaves_pretrained_untouched(tmp_path, tiny_data):
    path = checkpoint(tmp_path, tiny_data, "simclr")
    ckpt = torch.load(path, weights_only=True)
    pre = load_pretrained(path)
    encoder_before, head_before = state(pre.encoder), state(pre.head)

    model = classifier_from(pre, num_classes=4)
    neck_state = {k[len("projector."):]: v for k, v in ckpt["model"].items() if k.startswith("projector.0.")}
    assert_same_state(model.neck.state_dict(), neck_state)
    assert model.fc.in_features == 32 and model(torch.zeros(2, 1, SIZE, SIZE)).shape == (2, 4)
    assert classifier_from(pre, 4, from_head_layer=False).neck is None

    budget = Budget(epochs=1, min_steps=3, batch_size=16, lr=0.05, augment=False)
    tuned, acc = finetune(pre, tiny_data.train, tiny_data.test, 4, budget=budget)
    assert 0.0 <= acc <= 1.0 and tuned.neck is not None
    assert not torch.equal(tuned.encoder.state_dict()["features.0.weight"], encoder_before["features.0.weight"])  # it trained
    assert_same_state(state(pre.encoder), encoder_before)  # ... a copy
    assert_same_state(state(pre.head), head_before)


def test_finetune_accepts_a_bare_encoder(tiny_data):
    encoder, _ = small_cnn(CHANNELS, width=4)
    before = state(encoder)
    budget = Budget(epochs=1, min_steps=0, batch_size=32, augment=False)
    model, acc = finetune(encoder, tiny_data.train, None, 4, READER, budget=budget)
    assert acc is None and model.fc.in_features == 16
    assert_same_state(state(encoder), before)


# --- the supervised loop ------------------------------------------------------------------------

def counting(losses: list, sizes: list):
    def loss_fn(logits, labels, inputs):
        loss = F.cross_entropy(logits, labels)
        losses.append(loss.item())
        sizes.append(len(inputs))
        return loss

    return loss_fn


@pytest.mark.parametrize("epochs, batch_size, min_steps, steps", [
    (2, 16, 0, 8),  # 64 images: 4 batches an epoch
    (2, 16, 25, 25),  # min_steps wins
    (2, 24, 0, 6),  # ceil(64 / 24) = 3 batches (22, 22, 20), none of them tiny
    (3, 256, 0, 3),  # batch capped at the 64 images
])
def test_fit_classifier_takes_the_promised_number_of_steps(tiny_data, epochs, batch_size, min_steps, steps):
    losses, sizes = [], []
    fit_classifier(tiny_classifier(), tiny_data.train, None, READER, loss_fn=counting(losses, sizes),
                   epochs=epochs, batch_size=batch_size, lr=0.01, min_steps=min_steps, augment=False)
    assert len(losses) == steps
    assert max(sizes) <= min(batch_size, 64) and min(sizes) >= min(batch_size, 64) * 3 // 4


def test_fit_classifier_learns_the_tiny_task(tiny_data):
    losses, sizes = [], []
    model = tiny_classifier()
    acc = fit_classifier(model, tiny_data.train, tiny_data.test, READER, loss_fn=counting(losses, sizes),
                         epochs=40, batch_size=16, lr=0.05, augment=False)
    assert sum(losses[-8:]) / 8 < 0.5 * sum(losses[:8]) / 8
    assert acc >= 0.7  # chance is 0.25
    assert not model.training


def test_fit_classifier_is_reproducible_and_leaves_global_rng_alone(tiny_data):
    runs = []
    for _ in range(2):
        model = tiny_classifier(seed=3)
        torch.manual_seed(123)
        fit_classifier(model, tiny_data.train, None, READER, epochs=2, batch_size=16, lr=0.05, seed=7)
        runs.append((state(model), torch.rand(1)))
    assert_same_state(runs[0][0], runs[1][0])
    torch.manual_seed(123)
    assert torch.equal(runs[0][1], torch.rand(1))  # the caller's stream did not move


# --- supervised baseline ---------------------------------------------------------------------------

def test_supervised_baseline_is_the_same_network_from_random_init(tmp_path, tiny_data):
    pre = load_pretrained(checkpoint(tmp_path, tiny_data, "byol"))
    budget = Budget(epochs=1, min_steps=0, batch_size=32, augment=False)
    model, acc = supervised_baseline(pre.reader, "small_cnn", 4, tiny_data.train, tiny_data.test, budget=budget)
    assert 0.0 <= acc <= 1.0
    ours, theirs = model.encoder.state_dict(), pre.encoder.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(ours[k].shape == theirs[k].shape for k in ours)
    assert not torch.allclose(ours["features.0.weight"], theirs["features.0.weight"])
    assert_same_state(state(random_classifier(READER, "small_cnn", 4, seed=0)),
                      state(random_classifier(READER, "small_cnn", 4, seed=0)))
    assert not torch.equal(random_classifier(READER, "small_cnn", 4, seed=1).encoder.features[0].weight,
                           random_classifier(READER, "small_cnn", 4, seed=0).encoder.features[0].weight)


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


def test_fit_classifier_trains_on_the_first_view_and_hands_the_loss_the_last(tiny_data):
    from contrastive.batches import Views

    train = tiny_data.train.subset(range(16))
    flat = lambda x: (x.float() / 255).unsqueeze(0) if x.dim() == 2 else x.float() / 255  # noqa: E731
    views = Views(lambda item: [flat(item), -flat(item)], lambda raw, g: [flat(raw), -flat(raw)])
    seen = []

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            seen.append(("model", x.sum().item()))
            return x.flatten(1)[:, :4] * self.w

    def loss_fn(logits, labels, inputs):
        seen.append(("loss", inputs.sum().item()))
        return (logits.sum() - inputs.sum()) ** 2

    fit_classifier(Recorder(), train, None, READER, loss_fn=loss_fn, views=views, epochs=1, batch_size=16, lr=0.0)
    (_, model_sum), (_, loss_sum) = seen[0], seen[1]
    assert model_sum > 0 and loss_sum == pytest.approx(-model_sum)


def test_evaluate_accuracy_restores_the_mode(tiny_data):
    model = tiny_classifier()
    model.train()
    acc = evaluate_accuracy(model, tiny_data.test, READER, "cpu")
    assert 0.0 <= acc <= 1.0 and model.training
