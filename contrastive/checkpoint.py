"""Pretraining checkpoints in a run folder: their names, which to resume from, which to prune.

They are written and read as every model file is (contrastive.files): atomically and fsynced, and
checked before anything is unpickled, with weights_only=True.
"""

from __future__ import annotations

import re
from pathlib import Path

from contrastive import files
from contrastive.errors import ContrastiveError

CHECKPOINT_GLOB = "checkpoint-epoch*.pt"
KEEP_LAST = 2  # The newest and one before it, so a damaged newest file still leaves one to resume from.
MODELS = (files.CHECKPOINT, files.CLASSIFIER)  # what load_checkpoint reads unless told one kind


def checkpoint_name(epoch: int, step: int | None = None) -> str:
    """checkpoint-epoch0003.pt after 3 whole epochs; checkpoint-epoch0003-step00000123.pt inside the 4th."""
    return f"checkpoint-epoch{epoch:04d}.pt" if step is None else f"checkpoint-epoch{epoch:04d}-step{step:08d}.pt"


def save_atomic(obj: dict, path: str | Path) -> None:
    """A pretraining checkpoint at `path`, so that a crash at any moment leaves either the old file or the new one."""
    files.save(path, files.CHECKPOINT, obj)


def load_checkpoint(path: str | Path, kind: str | tuple[str, ...] = MODELS) -> dict:
    """A pretraining checkpoint or a classifier (or only `kind`), checked before it is unpickled
    (contrastive.files.load); every failure is a one-line ContrastiveError naming the file."""
    return files.load(path, kind)


CHECKPOINT_NAME = re.compile(r"checkpoint-epoch(\d+)(?:-step(\d+))?\.pt")


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints in a run folder, newest first (a mid-epoch one after its epoch's start). Only names
    written by checkpoint_name count: files a user put beside them (an exported checkpoint-epoch0030.ts.pt,
    a similarity index) are neither resumed from nor pruned."""
    def position(p: Path) -> tuple[int, int, int]:
        m = CHECKPOINT_NAME.fullmatch(p.name)
        return (int(m.group(1)), m.group(2) is not None, int(m.group(2) or 0))

    found = [p for p in Path(run_dir).glob(CHECKPOINT_GLOB) if CHECKPOINT_NAME.fullmatch(p.name)]
    return sorted(found, key=position, reverse=True)


def latest_good_checkpoint(run_dir: str | Path, warn=print) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads; damaged newer ones are reported and skipped."""
    for path in list_checkpoints(run_dir):
        try:
            return path, load_checkpoint(path, files.CHECKPOINT)
        except ContrastiveError as e:
            warn(f"warning: skipping {e}")
    return None


def prune_checkpoints(run_dir: str | Path, keep: int = KEEP_LAST) -> None:
    for old in list_checkpoints(run_dir)[keep:]:
        old.unlink(missing_ok=True)
