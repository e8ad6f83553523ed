"""contrastive.files: one writer that never leaves half a file, and one format whose kind is checked on load."""

import errno
import json
import os
import stat

import pytest
import torch

from contrastive import files
from contrastive.errors import ContrastiveError


def names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_atomic_writes_bytes_text_and_json(tmp_path):
    files.write_atomic(tmp_path / "a.bin", b"\x00\x01")
    files.write_atomic(tmp_path / "b.txt", "héllo\n")
    files.write_json(tmp_path / "c.json", {"x": [1, 2]})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01" and (tmp_path / "b.txt").read_text() == "héllo\n"
    assert (tmp_path / "c.json").read_text() == json.dumps({"x": [1, 2]}, indent=2) + "\n"
    assert names(tmp_path) == ["a.bin", "b.txt", "c.json"]  # no temporary left behind


def test_a_writer_that_raises_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old\n")

    def half_then_fail(tmp):
        tmp.write_text("ne")
        raise RuntimeError("the check did not pass")

    with pytest.raises(RuntimeError, match="the check did not pass"):
        files.write_atomic_with(path, half_then_fail)
    assert path.read_text() == "old\n" and names(tmp_path) == ["results.json"]


def test_a_full_disk_is_one_line_naming_the_file_and_the_way_out(tmp_path):
    path = tmp_path / "report.md"
    path.write_text("old\n")

    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(ContrastiveError) as e:
        files.write_atomic_with(path, full, "--sheet")
    assert str(e.value) == f"cannot write {path} (No space left on device); free disk space or choose another --sheet"
    assert path.read_text() == "old\n" and names(tmp_path) == ["report.md"]


def test_a_path_under_a_regular_file_is_one_line(tmp_path):
    (tmp_path / "a-file").write_text("keep me\n")
    path = tmp_path / "a-file" / "out.json"
    with pytest.raises(ContrastiveError) as e:
        files.write_json(path, {})
    assert str(e.value).startswith(f"cannot write {path} (") and str(e.value).endswith("); choose another --out")
    assert names(tmp_path) == ["a-file"] and (tmp_path / "a-file").read_text() == "keep me\n"


def test_the_file_and_its_folder_are_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", stat.S_ISDIR(os.fstat(fd).st_mode)))
                        or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace", None)) or real_replace(a, b))
    files.write_atomic(tmp_path / "new" / "config.json", "{}")
    assert events == [("fsync", False), ("replace", None), ("fsync", True)]  # the file, the rename, its folder
    assert (tmp_path / "new" / "config.json").read_text() == "{}"  # a missing folder is made


def test_files_that_belong_together_are_all_written_or_none(tmp_path):
    weights, spec = tmp_path / "m.safetensors", tmp_path / "m.safetensors.json"
    weights.write_bytes(b"old weights")

    def fail(tmp):
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(ContrastiveError, match="cannot write .*m.safetensors.json"):
        files.write_all_atomic({weights: lambda tmp: tmp.write_bytes(b"new"), spec: fail})
    assert weights.read_bytes() == b"old weights" and names(tmp_path) == ["m.safetensors"]
    files.write_all_atomic({weights: lambda tmp: tmp.write_bytes(b"new"), spec: lambda tmp: tmp.write_text("{}")})
    assert weights.read_bytes() == b"new" and spec.read_text() == "{}"


def test_a_temporary_keeps_the_suffix_writers_choose_formats_by(tmp_path):
    seen = []
    files.write_atomic_with(tmp_path / "emb.labels.npy", lambda tmp: seen.append(tmp.name) or tmp.write_bytes(b""))
    assert seen[0].startswith(".emb.labels.tmp-") and seen[0].endswith(".npy")


# --- the format ------------------------------------------------------------------------------

PAYLOADS = {
    files.CHECKPOINT: {"model": {"w": torch.arange(3.0)}, "config": {"method": "simclr"}, "format": 3},
    files.CLASSIFIER: {"model": {"fc.weight": torch.ones(2, 2)}, "encoder": {"backbone": "small_cnn"},
                       "num_classes": 2},
    files.INDEX: {"embeddings": torch.eye(3), "fingerprint": {"items": 3}},
}


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_each_kind_round_trips_with_its_tag(tmp_path, kind):
    path = tmp_path / f"{kind}.pt"
    files.save(path, kind, PAYLOADS[kind])
    raw = torch.load(path, weights_only=True)
    assert raw[files.TAG] == files.VERSION and raw["kind"] == kind
    loaded = files.load(path, kind)
    assert files.TAG not in loaded and loaded["kind"] == kind
    assert set(loaded) == set(PAYLOADS[kind]) | {"kind"}
    for key, value in PAYLOADS[kind].items():
        same = torch.equal if isinstance(value, torch.Tensor) else (lambda a, b: str(a) == str(b))
        assert same(loaded[key], value)
    assert names(tmp_path) == [f"{kind}.pt"]


def test_a_file_of_another_kind_is_refused_in_one_line(tmp_path):
    path = tmp_path / "classifier.pt"
    files.save(path, files.CLASSIFIER, PAYLOADS[files.CLASSIFIER])
    with pytest.raises(ContrastiveError) as e:
        files.load(path, files.CHECKPOINT)
    assert str(e.value) == (f"{path} is not a pretraining checkpoint (it is a classifier); "
                            "pass a checkpoint-epoch*.pt written by contrastive pretrain")
    index = tmp_path / "c.index.pt"
    files.save(index, files.INDEX, PAYLOADS[files.INDEX])
    with pytest.raises(ContrastiveError) as e:
        files.load(index, (files.CHECKPOINT, files.CLASSIFIER))
    assert str(e.value).startswith(f"{index} is not a pretraining checkpoint or a classifier (it is a similarity "
                                   f"index); pass a checkpoint-epoch*.pt written by contrastive pretrain or the ")


def test_a_payload_of_another_kind_is_not_saved(tmp_path):
    with pytest.raises(ValueError):
        files.save(tmp_path / "x.pt", files.CHECKPOINT, {"kind": "classifier", "model": {}})
    with pytest.raises(ValueError):
        files.save(tmp_path / "x.pt", "weights", {})
    assert names(tmp_path) == []


def test_a_file_from_a_newer_version_says_so(tmp_path):
    path = tmp_path / "new.pt"
    torch.save({files.TAG: files.VERSION + 1, "kind": files.CHECKPOINT}, path)
    with pytest.raises(ContrastiveError, match="written by a newer version of contrastive .*upgrade"):
        files.load(path, files.CHECKPOINT)


LEGACY = {  # what each kind looked like before the tag
    files.CHECKPOINT: {"format": 3, "model": {"w": torch.ones(1)}, "config": {"method": "byol"}},
    files.CLASSIFIER: {"kind": "classifier", "model": {"fc.bias": torch.zeros(2)}, "config": {"kind": "classifier"},
                       "encoder": {}},
    files.INDEX: {"model": torch.eye(2), "config": {"checkpoint_size": 10}},
}


@pytest.mark.parametrize("kind", sorted(LEGACY))
def test_an_untagged_file_of_todays_code_loads_as_its_kind(tmp_path, kind):
    path = tmp_path / "old.pt"
    torch.save(LEGACY[kind], path)
    loaded = files.load(path, kind)
    assert loaded["kind"] == kind and loaded["config"] == LEGACY[kind]["config"]
    other = files.CLASSIFIER if kind != files.CLASSIFIER else files.CHECKPOINT
    with pytest.raises(ContrastiveError, match=rf"is not {files.KINDS[other][0]} \(it looks like "
                                               rf"{files.KINDS[kind][0]}\)"):
        files.load(path, other)
