"""The linear probe: multinomial logistic regression on frozen features (the standard protocol)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from contrastive.errors import ContrastiveError
from contrastive.evaluate.features import extract_features

PROBE_ITERATIONS = 100  # L-BFGS iterations of the linear probe, each one pass over the cached features


class Probe(nn.Module):
    """A frozen encoder, the training features' standardisation, and the fitted linear layer."""

    def __init__(self, encoder: nn.Module, mean: torch.Tensor, std: torch.Tensor, linear: nn.Linear):
        super().__init__()
        self.encoder, self.linear = encoder, linear
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((self.encoder(x).float() - self.mean) / self.std)


def fit_linear_probe(encoder: nn.Module, train, num_classes: int, reader, *, device: torch.device | str = "cpu",
                     epochs: int = PROBE_ITERATIONS, lr: float = 1.0, weight_decay: float = 1e-4) -> Probe:
    """Multinomial logistic regression on frozen features; returns the Probe (encoder shared, not copied).

    Features are computed once, in eval mode and without gradients, so the encoder (its BN
    statistics included) is left exactly as it was. They are standardised with the
    training set's per-dimension mean and std: the classifier then sees every dimension on
    one scale whatever the encoder's output range, and the same penalty means the same
    thing for every encoder.

    The fit is full-batch L-BFGS (`epochs` iterations, each about one pass over the cached
    features) with a strong-Wolfe line search, from zero weights. The problem is convex
    and small (N x D features, D x C weights), so this reaches the optimum in a few dozen
    passes with no learning rate or batch size to tune, and it is deterministic.
    weight_decay is the L2 penalty (weight_decay / 2) * ||W||^2 on the weights, not on the bias.
    """
    if not train.has_labels:
        raise ContrastiveError("the linear probe needs labelled training items; this data has no labels")
    x_train, y_train = extract_features(encoder, train, reader, device)  # (N, D), (N,) on cpu
    mean, std = x_train.mean(dim=0), x_train.std(dim=0).nan_to_num(1.0).clamp_min(1e-6)  # (D,) each
    x_train, y_train = ((x_train - mean) / std).to(device), y_train.to(device)
    linear = nn.Linear(x_train.shape[1], num_classes).to(device)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=lr, max_iter=epochs, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(x_train), y_train) + 0.5 * weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return Probe(encoder, mean.to(device), std.to(device), linear)


def linear_probe(encoder: nn.Module, train, test, num_classes: int, reader, *, device: torch.device | str = "cpu",
                 epochs: int = PROBE_ITERATIONS, lr: float = 1.0, weight_decay: float = 1e-4, seed: int = 0) -> float:
    """Test top-1 of fit_linear_probe, a fraction in [0, 1]. Nothing is drawn: `seed` is accepted for a
    uniform signature only."""
    del seed
    if not test.has_labels:
        raise ContrastiveError("the linear probe needs labelled test items; this data has no labels")
    was_training = encoder.training
    probe = fit_linear_probe(encoder, train, num_classes, reader, device=device, epochs=epochs, lr=lr,
                             weight_decay=weight_decay)
    probe.train(was_training)  # a new Probe is in training mode: give the shared encoder its own mode back
    logits, labels = extract_features(probe, test, reader, device)
    encoder.train(was_training)
    return (logits.argmax(dim=1) == labels).float().mean().item()
