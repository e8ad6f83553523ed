"""load_checkpoint names what is wrong with a file: not a checkpoint at all, a torch file that
would run code, or a damaged one; always in one line, never quoting a cut-off PyTorch message."""

import io
import json
import os
import pickle
import random
import zipfile
from collections import OrderedDict

import pytest
import torch

from contrastive import files
from contrastive.checkpoint import latest_good_checkpoint, load_checkpoint, save_atomic
from contrastive.errors import ContrastiveError


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def good_checkpoint():
    return {"model": OrderedDict(w=torch.arange(6.0), b=torch.ones(2)), "config": {"method": "byol"}, "epoch": 2}


def load_error(path) -> str:
    """The ContrastiveError message for `path`, checked to be one line."""
    with pytest.raises(ContrastiveError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name,data,what", [
    ("README.md", "# contrastive\n\nSelf-supervised learning — SimCLR, MoCo, BYOL.\n".encode() * 40, "a text file"),
    ("config.json", json.dumps({"model": {}, "config": {}}).encode(), "a text file"),
    ("empty.pt", b"", "an empty file"),
    ("list.pkl", pickle.dumps([1, 2, 3]), "a Python pickle, not a PyTorch file"),
    ("evil.pkl", pickle.dumps(_Evil()), "a Python pickle, not a PyTorch file"),
], ids=["readme", "json", "empty", "pickled-list", "pickled-os-system"])
def test_a_file_that_torch_save_did_not_write_is_not_a_checkpoint(tmp_path, name, data, what):
    path = write(tmp_path / name, data)
    assert load_error(path) == f"{path} is not a checkpoint ({what}); pass a checkpoint-epoch*.pt written by contrastive pretrain (or a classifier .pt written by the pipeline, finetune or distill)"


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    data = random.Random(0).randbytes(4096)
    assert data[:1] not in (b"\x80", b"P") and b"\0" in data  # neither a pickle, a zip nor text
    message = load_error(write(tmp_path / "noise.pt", data))
    assert message.endswith("noise.pt is not a checkpoint (not a PyTorch file); "
                            "pass a checkpoint-epoch*.pt written by contrastive pretrain (or a classifier .pt written by the pipeline, finetune or distill)"), message


def test_a_zip_that_is_not_a_torch_archive_is_not_a_checkpoint(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("notes.txt", "hello")
    message = load_error(write(tmp_path / "notes.zip", buf.getvalue()))
    assert message.endswith("notes.zip is not a checkpoint (a zip archive, not a PyTorch file); "
                            "pass a checkpoint-epoch*.pt written by contrastive pretrain (or a classifier .pt written by the pipeline, finetune or distill)"), message


def test_a_truncated_torch_archive_is_named_as_such_in_whole_words(tmp_path):
    path = tmp_path / "checkpoint-epoch0002.pt"
    save_atomic(good_checkpoint(), path)
    path.write_bytes(path.read_bytes()[:1000])  # cut, as by a crash without atomic writes
    message = load_error(path)
    assert message == (f"checkpoint {path} is truncated or corrupted (its zip directory is missing or damaged); "
                       "use an earlier checkpoint")


def test_a_legacy_torch_file_cut_inside_a_global_name_is_truncated_not_code(tmp_path):
    path = tmp_path / "old.pt"
    torch.save(good_checkpoint(), path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    cut = data.index(b"collections\nOrderedDict") + len(b"collections\nOr")  # torch would read GLOBAL collections.Or
    message = load_error(write(path, data[:cut]))
    assert message == (f"checkpoint {path} is truncated or corrupted (its pickled data ends early or is damaged); "
                       "use an earlier checkpoint")


@pytest.mark.parametrize("legacy", [False, True])
def test_a_torch_file_with_pickled_code_is_refused_naming_the_global(tmp_path, legacy):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "payload": _Evil()}, path, _use_new_zipfile_serialization=not legacy)
    message = load_error(path)
    system = f"{os.system.__module__}.system"  # posix.system on Linux and macOS
    assert message == (f"refusing to load {path}: it holds pickled Python objects that could run code "
                       f"(it imports {system}); only load checkpoints written by contrastive, "
                       "or re-save the tensors you trust")


@pytest.mark.parametrize("obj", [[1, 2], torch.ones(2), {"model": {}}, {"config": {}}])
def test_a_torch_file_without_model_and_config_is_not_a_contrastive_checkpoint(tmp_path, obj):
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    assert load_error(path) == f"{path} is not a contrastive checkpoint (no 'model' and 'config' entries)"


@pytest.mark.parametrize("legacy", [False, True])
def test_a_whole_checkpoint_loads_in_either_torch_format(tmp_path, legacy):
    path = tmp_path / "ok.pt"
    torch.save(good_checkpoint(), path, _use_new_zipfile_serialization=not legacy)
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt["model"]["w"], torch.arange(6.0)) and ckpt["config"] == {"method": "byol"}


def test_save_atomic_writes_a_tagged_checkpoint_that_loads_as_one(tmp_path):
    path = tmp_path / "checkpoint-epoch0001.pt"
    save_atomic(good_checkpoint(), path)
    assert torch.load(path, weights_only=True)["kind"] == files.CHECKPOINT
    ckpt = load_checkpoint(path)
    assert ckpt["kind"] == files.CHECKPOINT and ckpt["epoch"] == 2 and torch.equal(ckpt["model"]["b"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_similarity_index_is_not_a_checkpoint_or_a_classifier(tmp_path):
    path = tmp_path / "checkpoint-epoch0001.index.pt"
    torch.save({"model": torch.eye(2), "config": {"items": 2}}, path)  # an index as written before the kind tag
    assert load_error(path) == (f"{path} is not a pretraining checkpoint or a classifier (it looks like a similarity "
                                "index); pass a checkpoint-epoch*.pt written by contrastive pretrain or the "
                                "classifier.pt written by `contrastive finetune --out DIR`")


def test_a_run_never_resumes_from_a_classifier(tmp_path):
    save_atomic(good_checkpoint(), tmp_path / "checkpoint-epoch0001.pt")
    files.save(tmp_path / "checkpoint-epoch0002.pt", files.CLASSIFIER, {"model": {}, "encoder": {}})
    warnings = []
    path, ckpt = latest_good_checkpoint(tmp_path, warn=warnings.append)
    assert path.name == "checkpoint-epoch0001.pt" and ckpt["epoch"] == 2
    assert warnings == [f"warning: skipping {tmp_path / 'checkpoint-epoch0002.pt'} is not a pretraining checkpoint "
                        "(it is a classifier); pass a checkpoint-epoch*.pt written by contrastive pretrain"]


def test_atomic_save_leaves_old_file_when_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_atomic({"model": {"w": torch.ones(2)}, "config": {}}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(ContrastiveError, match="No space left on device.*free disk space"):
        save_atomic({"model": {"w": torch.zeros(2)}, "config": {}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary left behind
