"""Checkpoints that cannot be half-written and are never trusted blindly.

Writes go to a temporary file in the same folder, are fsynced, then renamed over the
target (atomic on POSIX), and the folder is fsynced. Reads use
`torch.load(weights_only=True)`, which refuses pickled objects that could run code.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

from contrastive.errors import ContrastiveError

CHECKPOINT_GLOB = "checkpoint-epoch*.pt"
KEEP_LAST = 2  # The newest and one before it, so a damaged newest file still leaves one to resume from.


def checkpoint_name(epoch: int, step: int | None = None) -> str:
    """checkpoint-epoch0003.pt after 3 whole epochs; checkpoint-epoch0003-step00000123.pt inside the 4th."""
    return f"checkpoint-epoch{epoch:04d}.pt" if step is None else f"checkpoint-epoch{epoch:04d}-step{step:08d}.pt"


def save_atomic(obj: dict, path: str | Path) -> None:
    """torch.save to `path` so that a crash at any moment leaves either the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ContrastiveError(f"could not write checkpoint {path}: {e.strerror or e}; free disk space or choose another --out") from None
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint safely; every failure is a one-line ContrastiveError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ContrastiveError(f"checkpoint {path} does not exist; pass the path of a checkpoint-epoch*.pt file from a run folder")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = first_line(e)
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise ContrastiveError(
                f"refusing to load {path}: it holds pickled Python objects that could run code ({first[:120]}); "
                "only load checkpoints written by contrastive, or re-save the tensors you trust"
            ) from None
        raise ContrastiveError(f"checkpoint {path} is corrupted ({first[:120]}); use an earlier checkpoint") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = first_line(e)
        raise ContrastiveError(f"checkpoint {path} is truncated or corrupted ({first[:120]}); use an earlier checkpoint") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ContrastiveError(f"{path} is not a contrastive checkpoint (no 'model' and 'config' entries)")
    return ckpt


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints in a run folder, newest first (a mid-epoch one after its epoch's start)."""
    def position(p: Path) -> tuple[int, int, int]:
        m = re.fullmatch(r"checkpoint-epoch(\d+)(?:-step(\d+))?\.pt", p.name)
        if not m:
            return (-1, 0, 0)
        return (int(m.group(1)), m.group(2) is not None, int(m.group(2) or 0))

    return sorted(Path(run_dir).glob(CHECKPOINT_GLOB), key=position, reverse=True)


def latest_good_checkpoint(run_dir: str | Path, warn=print) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads; damaged newer ones are reported and skipped."""
    for path in list_checkpoints(run_dir):
        try:
            return path, load_checkpoint(path)
        except ContrastiveError as e:
            warn(f"warning: skipping {e}")
    return None


def prune_checkpoints(run_dir: str | Path, keep: int = KEEP_LAST) -> None:
    for old in list_checkpoints(run_dir)[keep:]:
        old.unlink(missing_ok=True)
