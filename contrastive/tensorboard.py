"""TensorBoard view of a run (--tensorboard): the numbers of metrics.jsonl, drawn live.

metrics.jsonl stays the source of truth; this writes the same values to RUN/tensorboard so
`tensorboard --logdir runs` can plot them while a run trains. Every scalar's x axis is the
optimizer step, so the per-step loss, the per-epoch loss and the kNN curve (its random-init
point at step 0) line up:

    train/loss, train/lr                      every cfg.log_every steps, as in metrics.jsonl
    epoch/loss, epoch/items_per_s, knn/top1   at the last step of each epoch (kNN when measured)
    pipeline/<column>                         the pipeline's accuracies, x = label fraction in basis points
"""

from __future__ import annotations

from pathlib import Path

from contrastive.callbacks import Callback
from contrastive.errors import ContrastiveError
from contrastive.pipeline.results import Results
from contrastive.report import format_table

MISSING = "--tensorboard needs the tensorboard package: pip install 'contrastive[tensorboard]'"


def summary_writer_class():
    """torch's SummaryWriter, or the one-line error that says how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ContrastiveError(MISSING) from None
    return SummaryWriter


class TensorBoardLog(Callback):
    """Writes the run's step, epoch and kNN numbers to RUN/tensorboard (rank 0 only: train.setup adds it there).
    Created at the start of setup, so a missing package stops the run before anything is written."""

    def __init__(self):
        self.writer_class = summary_writer_class()
        self.writer = None
        self.lr = None  # the lr of the coming step: read after the previous step's schedule step

    def on_start(self, run) -> None:
        # On resume, events past the restored step (logged before the crash) are hidden from TensorBoard.
        purge = run.step + 1 if run.resumed else None
        self.writer = self.writer_class(log_dir=str(run.run_dir / "tensorboard"), purge_step=purge)
        if not run.resumed and "0" in run.history["knn"]:  # the kNN monitor measured the random-init encoder
            self.writer.add_scalar("knn/top1", run.history["knn"]["0"], 0)
        self.lr = run.optimizer.param_groups[0]["lr"]

    def on_step(self, run, loss: float, finite: bool) -> None:
        # The schedule has already stepped: the lr this step used is the one read after the previous step.
        if run.step % run.cfg.log_every == 0:
            self.writer.add_scalar("train/loss", loss, run.step)
            self.writer.add_scalar("train/lr", self.lr, run.step)
        self.lr = run.optimizer.param_groups[0]["lr"]

    def on_epoch_end(self, run, epoch: int, record: dict) -> None:
        self.writer.add_scalar("epoch/loss", record["epoch_loss"], run.step)
        self.writer.add_scalar("epoch/items_per_s", record["items_per_s"], run.step)
        if record.get("knn_top1") is not None:
            self.writer.add_scalar("knn/top1", record["knn_top1"], run.step)
        self.writer.flush()

    def on_end(self, run) -> None:
        self.writer.close()


def fraction_step(key: str) -> int:
    """A label fraction ("0.01") as TensorBoard's integer x, in basis points (100), so that fractions
    below 1% (0.001, 0.005) keep steps of their own."""
    return round(float(key) * 10_000)


def log_results(folder: Path, results: Results) -> None:
    """The pipeline's accuracy table in TensorBoard: one scalar tag per column (x = label fraction in basis points)
    and the Markdown table as text."""
    writer = summary_writer_class()(log_dir=str(folder))
    for key, row in results.rows.items():
        for column, cell in row.cells.items():
            writer.add_scalar(f"pipeline/{column}", cell.mean, fraction_step(key))
    knn = results.knn_top1
    head = (f"{results.method} / {results.backbone} (student {results.student}) on {results.dataset}"
            + (f"; kNN top-1 {knn:.4f}" if knn is not None else ""))
    writer.add_text("pipeline/results", head + "\n\n" + format_table(results), 0)
    writer.close()
