"""Hooks into the one training loop (contrastive.train): the kNN monitor, TensorBoard logs, benchmarks'
clocks and the tests' fault injection are callbacks, so nothing patches the loop to reach inside it."""

from __future__ import annotations


class Callback:
    """Hooks into the loop; every one is a no-op unless overridden. `run` is the live contrastive.train.Run."""

    def on_start(self, run) -> None:
        """After setup (and restore); `run.resumed` tells which."""

    def wrap_batches(self, run, epoch: int, views_batches):
        """The epoch's iterator of (views, labels); return it, or a wrapper (e.g. to time it)."""
        return views_batches

    def on_step(self, run, loss: float, finite: bool) -> None:
        """After the optimizer, target and schedule steps of `run.step` (already counted)."""

    def on_epoch_end(self, run, epoch: int, record: dict) -> None:
        """Before the epoch's line is logged and its checkpoint saved; may add entries to `record`."""

    def on_end(self, run) -> None:
        """After the last step."""
