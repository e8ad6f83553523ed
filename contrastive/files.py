"""Every file the project writes, and the one format of the models it reads back.

One writer: the bytes go to a temporary file beside the target (the same folder, so the rename never
crosses a file system), are flushed and fsynced, the temporary is renamed over the target (atomic on
POSIX) and the folder is fsynced, so the rename itself survives a power cut. A failure at any moment
(a full disk, a writer that raises, Ctrl-C) leaves the file that was there before, and no temporary.
metrics.jsonl is the one file appended to instead (contrastive.train_log).

One format: pretraining checkpoints, classifiers and similarity indices are torch files holding one
dict, `{"contrastive_file": 1, "kind": KIND, **payload}`. `load(path, kind)` looks at the first bytes
before anything is unpickled (a text file, a foreign zip or pickle and a cut archive are each named for
what they are), unpickles with `torch.load(weights_only=True)`, which refuses pickled objects that could
run code, and refuses a file of another kind. Files written before the tag have their kind read from
their keys, as the loaders did then.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import pickle
import pickletools
import re
import struct
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from contrastive.errors import ContrastiveError

TAG, VERSION = "contrastive_file", 1  # the key that marks the format, and the format's version
CHECKPOINT, CLASSIFIER, INDEX = "checkpoint", "classifier", "index"
KINDS = {  # kind: (what a file of it is, what to pass when another kind was expected)
    CHECKPOINT: ("a pretraining checkpoint", "a checkpoint-epoch*.pt written by contrastive pretrain"),
    CLASSIFIER: ("a classifier", "the classifier.pt written by `contrastive finetune --out DIR`"),
    INDEX: ("a similarity index", "the CHECKPOINT.index.pt that contrastive similar writes"),
}
# How a torch.save output begins: a zip archive (PyTorch >= 1.6), or, in the older format, a pickle
# (protocol byte 0x80) whose first object is torch's magic number 0x1950A86A20F9469CFC6C as a LONG1.
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTO = b"\x80"
LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
LEGACY_PICKLES = 5  # magic number, protocol version, system info, the object, its storage keys
HEAD_BYTES = 512  # enough to tell text from binary and to find the legacy magic number
REASON_CHARS = 120  # longest underlying error line quoted in a message


# --- the writer ------------------------------------------------------------------------------

def write_atomic(path: str | Path, data: bytes | str, flag: str = "--out") -> None:
    """`data` (str as UTF-8) as the whole of `path`; `flag` is the option the user changes when it cannot be written."""
    payload = data.encode() if isinstance(data, str) else data
    write_atomic_with(path, lambda tmp: tmp.write_bytes(payload), flag)


def write_json(path: str | Path, obj, flag: str = "--out") -> None:
    write_atomic(path, json.dumps(obj, indent=2) + "\n", flag)


def write_atomic_with(path: str | Path, write: Callable[[Path], None], flag: str = "--out") -> None:
    """For writers that want a path (torch.jit.save, numpy.save, onnx, savefig): write(tmp) fills a temporary
    that keeps the target's suffix (writers pick formats by it), which then replaces `path`."""
    write_all_atomic({Path(path): write}, flag)


def write_all_atomic(files: dict[Path, Callable[[Path], None]], flag: str = "--out") -> None:
    """Several files that belong together (weights and the JSON that describes them): each is written to its
    temporary, then all are renamed, so a failure while writing any of them (or a check a writer makes)
    leaves none of them behind. A missing folder is made; anything but OSError is raised as it is."""
    files = {Path(p): write for p, write in files.items()}
    tmps = {p: p.with_name(f".{p.stem}.tmp-{os.getpid()}{p.suffix}") for p in files}
    target = None
    try:
        for target, write in files.items():
            if not target.parent.exists():
                target.parent.mkdir(parents=True)  # under a regular file: "Not a directory"
            open(tmps[target], "wb").close()  # an unwritable target fails here, before a long write
            write(tmps[target])
            fsync_file(tmps[target])
        for target, tmp in tmps.items():
            os.replace(tmp, target)
    except OSError as e:
        raise cannot_write(target, e, flag) from None
    finally:
        remove(tmps.values())
    for folder in {p.parent for p in files}:
        fsync_dir(folder)


def fsync_file(path: Path) -> None:
    """Its bytes on the disk, not only in the page cache, before it is renamed over what the user had."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """The folder's entry for a renamed file on the disk; a file system that cannot fsync folders is let be."""
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


def remove(paths: Iterable[Path]) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:  # its folder could not be made: nothing to remove
            pass


def cannot_write(path: Path | None, err: OSError, flag: str) -> ContrastiveError:
    full = err.errno in (errno.ENOSPC, errno.EDQUOT)
    advice = f"free disk space or choose another {flag}" if full else f"choose another {flag}"
    return ContrastiveError(f"cannot write {path} ({err.strerror or err}); {advice}")


# --- the format ------------------------------------------------------------------------------

def save(path: str | Path, kind: str, payload: dict, flag: str = "--out") -> None:
    """A torch file of `kind` holding `payload` (tensors, and plain Python values weights_only loading reads)."""
    if kind not in KINDS or payload.get("kind", kind) != kind or TAG in payload:
        raise ValueError(f"cannot save a {payload.get('kind', kind)!r} payload as kind {kind!r}")
    tagged = {TAG: VERSION, "kind": kind, **payload}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(tagged, f)

    write_atomic_with(path, write, flag)


def load(path: str | Path, kind: str | tuple[str, ...]) -> dict:
    """The payload of a file of `kind` (or of one of several kinds), with "kind" set to what the file is.
    Every failure is a one-line ContrastiveError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ContrastiveError(f"checkpoint {path} does not exist; pass the path of a checkpoint-epoch*.pt file from a run folder")
    contents = read_torch_file(path)
    found, tagged = kind_of(path, contents)
    wanted = (kind,) if isinstance(kind, str) else tuple(kind)
    if found not in wanted:
        raise wrong_kind(path, found, wanted, tagged)
    return {**{k: v for k, v in contents.items() if k != TAG}, "kind": found}


def read_torch_file(path: Path):
    check_torch_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise unpickling_error(path, e) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, NotImplementedError) as e:
        raise corrupted(path, short_reason(e)) from None
    except (KeyError, IndexError, struct.error):  # raised by torch's unpickler on damaged bytes
        raise corrupted(path, "its pickled data does not parse") from None


def kind_of(path: Path, contents) -> tuple[str, bool]:
    """(kind, whether the file says so itself)."""
    if isinstance(contents, dict) and TAG in contents:
        if not isinstance(contents[TAG], int) or contents[TAG] > VERSION:
            raise ContrastiveError(f"{path} was written by a newer version of contrastive (file format "
                                   f"{contents[TAG]!r}, this version reads {VERSION}); upgrade contrastive to read it")
        return str(contents.get("kind")), True
    if not isinstance(contents, dict) or "model" not in contents or "config" not in contents:
        raise ContrastiveError(f"{path} is not a contrastive checkpoint (no 'model' and 'config' entries)")
    return legacy_kind(contents), False


def legacy_kind(contents: dict) -> str:
    """The kind of a file written before the tag, all of which held "model" and "config": a classifier said
    so in "kind" (older ones in config["kind"]), an index held one tensor as "model"."""
    config = contents["config"]
    if contents.get("kind") == CLASSIFIER or (isinstance(config, dict) and config.get("kind") == CLASSIFIER):
        return CLASSIFIER
    if isinstance(contents["model"], torch.Tensor):
        return INDEX
    return CHECKPOINT


def wrong_kind(path: Path, found: str, wanted: tuple[str, ...], tagged: bool) -> ContrastiveError:
    """e.g. "X is not a classifier (it is a pretraining checkpoint); pass the classifier.pt written by ..."."""
    expected = " or ".join(KINDS[k][0] for k in wanted)
    what = KINDS[found][0] if found in KINDS else f"a file of kind {found!r}"
    hint = " or ".join(KINDS[k][1] for k in wanted)
    return ContrastiveError(f"{path} is not {expected} (it {'is' if tagged else 'looks like'} {what}); pass {hint}")


# --- what a file is, from its bytes ----------------------------------------------------------

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
