"""Checkpoints that cannot be half-written and are never trusted blindly.

Writes go to a temporary file in the same folder, are fsynced, then renamed over the
target (atomic on POSIX), and the folder is fsynced. Reads first look at the file's
first bytes, so that a text file, a foreign zip or pickle, and a cut archive are each named
for what they are, then use `torch.load(weights_only=True)`, which refuses pickled objects
that could run code.
"""

from __future__ import annotations

import mmap
import os
import pickle
import pickletools
import re
import struct
import zipfile
from pathlib import Path

import torch

from contrastive.errors import ContrastiveError

CHECKPOINT_GLOB = "checkpoint-epoch*.pt"
KEEP_LAST = 2  # The newest and one before it, so a damaged newest file still leaves one to resume from.
# How a torch.save output begins: a zip archive (PyTorch >= 1.6), or, in the older format, a pickle
# (protocol byte 0x80) whose first object is torch's magic number 0x1950A86A20F9469CFC6C as a LONG1.
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTO = b"\x80"
LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
LEGACY_PICKLES = 5  # magic number, protocol version, system info, the object, its storage keys
HEAD_BYTES = 512  # enough to tell text from binary and to find the legacy magic number
REASON_CHARS = 120  # longest underlying error line quoted in a message


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
    check_torch_file(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise unpickling_error(path, e) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, NotImplementedError) as e:
        raise corrupted(path, short_reason(e)) from None
    except (KeyError, IndexError, struct.error):  # raised by torch's unpickler on damaged bytes
        raise corrupted(path, "its pickled data does not parse") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ContrastiveError(f"{path} is not a contrastive checkpoint (no 'model' and 'config' entries)")
    return ckpt


def check_torch_file(path: Path) -> None:
    """Raise unless the file's first bytes are those of a torch.save output (and, for a zip,
    its directory is whole and holds a pickle); nothing is unpickled here."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError as e:
        raise ContrastiveError(f"could not read checkpoint {path}: {e.strerror or e}; check its permissions") from None
    if head.startswith(ZIP_MAGIC):
        check_torch_archive(path)
    elif head.startswith(PICKLE_PROTO) and LEGACY_MAGIC in head:
        check_legacy_pickles(path)
    else:
        raise not_a_checkpoint(path, describe(head))


def check_torch_archive(path: Path) -> None:
    """torch.save's zip holds <name>/data.pkl; a zip without it was written by something else."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
        raise corrupted(path, "its zip directory is missing or damaged") from None
    if not any(name.count("/") == 1 and name.endswith("/data.pkl") for name in names):
        raise not_a_checkpoint(path, "a zip archive, not a PyTorch file")


def check_legacy_pickles(path: Path) -> None:
    """The older format is LEGACY_PICKLES pickles, then raw storage bytes. Their opcodes are read
    (never run) to the end, so that a file cut inside a GLOBAL's name reads as truncated, not
    as a file that imports an unknown global. A memory map, because its read(n) stops at the end
    of the file where a file's would first allocate a damaged length of n bytes."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            for _ in range(LEGACY_PICKLES):
                for _ in pickletools.genops(data):
                    pass
    except ValueError:
        raise corrupted(path, "its pickled data ends early or is damaged") from None


def describe(head: bytes) -> str:
    """What a file that torch.save did not write looks like, from its first bytes."""
    if not head:
        return "an empty file"
    if head.startswith(PICKLE_PROTO):
        return "a Python pickle, not a PyTorch file"
    if looks_like_text(head):
        return "a text file"
    return "not a PyTorch file"


def looks_like_text(head: bytes) -> bool:
    """UTF-8 without NUL bytes; a character cut by the end of `head` does not count against it."""
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.reason == "unexpected end of data"
    return True


def unpickling_error(path: Path, err: pickle.UnpicklingError) -> ContrastiveError:
    """A torch file whose pickle imports a global that weights_only loading blocks is refused,
    naming the global; any other unpickling failure means the file is damaged."""
    name = blocked_global(err)
    if name is None:
        return corrupted(path, "its pickled data does not parse")
    return ContrastiveError(
        f"refusing to load {path}: it holds pickled Python objects that could run code (it imports {name}); "
        "only load checkpoints written by contrastive, or re-save the tensors you trust"
    )


def blocked_global(err: pickle.UnpicklingError) -> str | None:
    """The dotted name in torch's "GLOBAL posix.system whose module posix is blocked" or
    "GLOBAL __main__.Foo was not an allowed global", or None when it names none."""
    m = re.search(r"\bGLOBAL ([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+) ", str(err))
    return m.group(1) if m else None


def not_a_checkpoint(path: Path, what: str) -> ContrastiveError:
    return ContrastiveError(f"{path} is not a checkpoint ({what}); pass a checkpoint-epoch*.pt written by contrastive pretrain (or a classifier .pt written by the pipeline, finetune or distill)")


def corrupted(path: Path, reason: str) -> ContrastiveError:
    return ContrastiveError(f"checkpoint {path} is truncated or corrupted ({reason}); use an earlier checkpoint")


def short_reason(err: BaseException) -> str:
    """The first line of an error, or its first sentence when the line is long; never a cut word."""
    line = first_line(err)
    if len(line) > REASON_CHARS:
        line = line.split(". ")[0].rstrip(".")
    return line if len(line) <= REASON_CHARS else type(err).__name__


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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
            return path, load_checkpoint(path)
        except ContrastiveError as e:
            warn(f"warning: skipping {e}")
    return None


def prune_checkpoints(run_dir: str | Path, keep: int = KEEP_LAST) -> None:
    for old in list_checkpoints(run_dir)[keep:]:
        old.unlink(missing_ok=True)


def write_files_atomic(files: dict, flag: str = "--out") -> None:
    """files: target Path -> write(tmp). Each is written to a temporary file beside its target, then every
    one is renamed over its target: a failure anywhere (a full disk, a check that does not pass) leaves none
    of them behind, and no reader ever sees half a file. The temporary keeps the target's suffix (writers
    pick formats by it)."""
    tmps = {p: p.with_name(f".{p.stem}.tmp-{os.getpid()}{p.suffix}") for p in files}
    target = None
    try:
        for target, write in files.items():
            if not target.parent.exists():
                target.parent.mkdir(parents=True)  # under a regular file: "Not a directory"
            open(tmps[target], "wb").close()  # an unwritable target fails here, before a long write
            write(tmps[target])
        for target, tmp in tmps.items():
            os.replace(tmp, target)
    except OSError as e:
        raise ContrastiveError(f"cannot write {target} ({e.strerror or e}); choose another {flag}") from None
    finally:
        for tmp in tmps.values():
            try:
                tmp.unlink(missing_ok=True)
            except OSError:  # its folder could not be made: nothing to remove
                pass
