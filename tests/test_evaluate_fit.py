"""The supervised loop (contrastive/evaluate/fit.py): its steps, reproducibility and views."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastive.evaluate.fit import evaluate_accuracy, fit_classifier
from helpers import READER, assert_same_state, state, tiny_classifier


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
