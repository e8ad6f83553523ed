"""`contrastive export` round trips on the embedded digits: a tiny fine-tuned classifier and its encoder,
exported as ONNX, TorchScript and safetensors + JSON, give what the package itself computes on the
test digits (the package's eval views vs. raw [0, 1] images fed to the exported file); and each user
mistake is one line that leaves no file behind."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import onnxruntime
import pytest
import torch

from contrastive.batches import batches
from contrastive.cli import build_parser, main
from contrastive.cli.export import run as cmd_export
from contrastive.config import PretrainConfig
from contrastive.errors import ContrastiveError
from contrastive.evaluate.classifier import load_classifier, reader_of
from contrastive.evaluate.pretrained import load_pretrained
from contrastive.export import load_safetensors
from contrastive.modality import load_data
from contrastive.train import pretrain
from helpers import quiet

TOLERANCE = 1e-4  # |exported file - package| on logits / embeddings; measured 2e-8 (encoder) to 1.5e-5 (onnx classifier)
PICK = torch.arange(0, 1000, 5)  # 200 of the 1,000 test digits, spread over the split (it is ordered by class)
FORMATS = ("onnx", "torchscript", "safetensors")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A 1-epoch SimCLR checkpoint and a classifier fine-tuned from it for 60 steps, every format exported
    beside each under its default name (no --out)."""
    root = tmp_path_factory.mktemp("export")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # conftest's one-thread fixture is per test and runs after this one
    try:
        pretrain(PretrainConfig(method="simclr", epochs=1, batch_size=64, train_limit=256, out=str(root / "run")),
                 log=quiet)
        ckpt = root / "run" / "checkpoint-epoch0001.pt"
        assert main(["finetune", "--checkpoint", str(ckpt), "--label-fraction", "0.05", "--epochs", "1",
                     "--min-steps", "60", "--out", str(root / "ft")]) == 0
        printed = {}
        for kind, path in (("encoder", ckpt), ("classifier", root / "ft" / "classifier.pt")):
            for fmt in FORMATS:
                printed[kind, fmt] = exported(["--model", str(path), "--format", fmt])
    finally:
        torch.set_num_threads(threads)
    return {"encoder": ckpt, "classifier": root / "ft" / "classifier.pt", "printed": printed}


def exported(flags: list[str]) -> str:
    """What `contrastive export FLAGS` printed (it must succeed)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cmd_export(build_parser().parse_args(["export", *flags])) == 0
    return out.getvalue()


def export_error(flags: list[str]) -> str:
    with pytest.raises(ContrastiveError) as e:
        cmd_export(build_parser().parse_args(["export", *flags]))
    message = str(e.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def digits():
    return load_data(None).test


def package_outputs(model: torch.nn.Module, reader, items) -> torch.Tensor:
    """The model applied the package's own way: its modality's eval views, batched by contrastive.batches."""
    model.eval()
    order = PICK
    with torch.no_grad():
        return torch.cat([model(views[0]) for views, _ in batches(items, reader.eval_views(items), order, 64,
                                                                   torch.device("cpu"), epoch_seed=0)])


def raw_inputs(items) -> torch.Tensor:
    """The pinned contract, built the way a user without this package would: float32 in [0, 1], (N, C, H, W)."""
    return items.take(PICK).float() / 255


def run_exported(path, fmt: str, x: torch.Tensor) -> torch.Tensor:
    """The exported file run by the runtime of its format (onnxruntime needs nothing from this package)."""
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(["output"], {"input": x.numpy()})[0])
    module = torch.jit.load(str(path)) if fmt == "torchscript" else load_safetensors(path)
    with torch.no_grad():
        return module(x)


SUFFIX = {"onnx": ".onnx", "torchscript": ".ts.pt", "safetensors": ".safetensors"}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:FutureWarning")
@pytest.mark.parametrize("fmt", FORMATS)
def test_classifier_round_trip_gives_the_packages_predictions(models, digits, fmt):
    model, _ = load_classifier(models["classifier"])
    want = package_outputs(model, reader_of(model), digits)  # (200, 10) logits
    got = run_exported(models["classifier"].with_suffix(SUFFIX[fmt]), fmt, raw_inputs(digits))
    diff = (got - want).abs().max().item()
    print(f"classifier {fmt}: max abs difference {diff:.2e} on {len(PICK)} test digits")
    assert got.shape == (len(PICK), 10) and diff <= TOLERANCE
    assert torch.equal(got.argmax(1), want.argmax(1))
    assert len(set(want.argmax(1).tolist())) >= 8  # a trained classifier (60 steps: ~0.9 top-1), not a constant
    printed = models["printed"]["classifier", fmt]
    assert "max abs difference" in printed and f"(tolerance {TOLERANCE:g})" in printed
    assert "input float32 (N, 1, 28, 28) in [0, 1] -> logits (N, 10)" in printed


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:FutureWarning")
@pytest.mark.parametrize("fmt", FORMATS)
def test_encoder_round_trip_gives_the_packages_embeddings(models, digits, fmt):
    pre = load_pretrained(models["encoder"])
    want = package_outputs(pre.encoder, pre.reader, digits)  # (200, 512) embeddings of small_cnn_grid
    got = run_exported(models["encoder"].with_suffix(SUFFIX[fmt]), fmt, raw_inputs(digits))
    diff = (got - want).abs().max().item()
    print(f"encoder {fmt}: max abs difference {diff:.2e} on {len(PICK)} test digits")
    assert got.shape == (len(PICK), pre.feat_dim) and diff <= TOLERANCE
    assert f"-> embeddings (N, {pre.feat_dim})" in models["printed"]["encoder", fmt] and pre.feat_dim == 512


@pytest.mark.slow
def test_onnx_batch_axis_is_dynamic(models):
    session = onnxruntime.InferenceSession(str(models["classifier"].with_suffix(".onnx")),
                                           providers=["CPUExecutionProvider"])
    for n in (1, 7):
        x = np.random.default_rng(n).random((n, 1, 28, 28), dtype=np.float32)
        assert session.run(["output"], {"input": x})[0].shape == (n, 10)


@pytest.mark.slow
def test_safetensors_json_describes_the_classifier(models):
    spec = json.loads(models["classifier"].with_suffix(".safetensors.json").read_text())
    assert spec["kind"] == "classifier" and spec["num_classes"] == 10 and spec["classes"] == [str(c) for c in range(10)]
    assert spec["record"]["backbone"] == "small_cnn_grid" and spec["record"]["neck"] is not None  # fine-tuned from the head layer
    assert len(spec["sha256"]) == 64


def copy_export(models, tmp_path):
    weights = tmp_path / "classifier.safetensors"
    shutil.copy(models["classifier"].with_suffix(".safetensors"), weights)
    shutil.copy(models["classifier"].with_suffix(".safetensors.json"), tmp_path / "classifier.safetensors.json")
    return weights


@pytest.mark.slow
def test_a_tampered_safetensors_file_is_refused_in_one_line(models, tmp_path):
    weights = copy_export(models, tmp_path)
    load_safetensors(weights)  # the untouched copy loads
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of the last weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ContrastiveError) as e:
        load_safetensors(weights)
    assert "changed after export (sha256 differs" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
def test_a_json_that_does_not_match_the_weights_is_refused_in_one_line(models, tmp_path):
    weights = copy_export(models, tmp_path)
    spec_file = tmp_path / "classifier.safetensors.json"
    spec = json.loads(spec_file.read_text())
    spec["record"]["neck"] = None  # the weights still hold the neck: their keys no longer match
    spec_file.write_text(json.dumps(spec))
    with pytest.raises(ContrastiveError, match="classifier.safetensors.json was changed after export"):
        load_safetensors(weights)  # the digest covers the JSON too
    from contrastive.export import digest_of, sha256_of

    spec["sha256"] = digest_of(sha256_of(weights), spec)  # rewritten with a matching digest: the shapes still differ
    spec_file.write_text(json.dumps(spec))
    with pytest.raises(ContrastiveError) as e:
        load_safetensors(weights)
    assert "does not match its classifier.safetensors.json: unexpected module.neck" in str(e.value)
    assert "\n" not in str(e.value)


REAL_SESSION = onnxruntime.InferenceSession


class ShiftedSession:
    """An onnxruntime session whose outputs are off by `offset`: a file that no longer matches PyTorch."""

    offset = 0.0

    def __init__(self, *args, **kwargs):
        self.session = REAL_SESSION(*args, **kwargs)

    def run(self, names, feeds):
        return [out + np.float32(self.offset) for out in self.session.run(names, feeds)]


@pytest.mark.slow
@pytest.mark.parametrize("offset", [1e-3, float("nan")])
def test_onnx_above_the_tolerance_fails_in_one_line_and_leaves_no_file(models, tmp_path, monkeypatch, capsys, offset):
    monkeypatch.setattr(ShiftedSession, "offset", offset)
    monkeypatch.setattr(onnxruntime, "InferenceSession", ShiftedSession)
    out = tmp_path / "out" / "model.onnx"
    message = export_error(["--model", str(models["classifier"]), "--format", "onnx", "--out", str(out)])
    assert "differs from PyTorch by" in message and "above --tolerance 0.0001" in message
    assert list((tmp_path / "out").iterdir()) == []  # neither the file nor its temporary
    assert "max abs difference" in capsys.readouterr().out


@pytest.mark.slow
def test_a_tolerance_of_zero_fails_exactly_when_the_file_differs(models, tmp_path):
    out = tmp_path / "zero.onnx"
    flags = ["--model", str(models["classifier"]), "--format", "onnx", "--out", str(out), "--tolerance", "0"]
    try:
        printed = exported(flags)
    except ContrastiveError as e:  # some difference: refused, nothing written
        assert float(str(e).split("differs from PyTorch by ")[1].split()[0]) > 0 and not out.exists()
    else:  # bit-identical on this machine: kept
        assert "max abs difference 0.00e+00" in printed and out.exists()


def test_a_file_of_the_wrong_kind_is_one_line(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a model\n")
    message = export_error(["--model", str(text), "--format", "onnx"])
    assert "is not a checkpoint (a text file)" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.pt"]


@pytest.mark.slow
def test_an_unwritable_out_is_one_line(models, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for fmt in FORMATS:
        out = blocker / f"model{SUFFIX[fmt]}"  # a path under a regular file cannot be created
        message = export_error(["--model", str(models["classifier"]), "--format", fmt, "--out", str(out)])
        assert message.startswith(f"cannot write {out} (") and message.endswith("; choose another --out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.slow
def test_the_cli_prints_one_error_line_and_exits_2(models, capsys):
    assert main(["export", "--model", str(models["classifier"]), "--format", "onnx",
                 "--out", str(models["classifier"])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out") and "is the model file itself" in err and err.count("\n") == 1


def test_a_similarity_index_is_refused_naming_what_it_is(tmp_path):
    from contrastive import files

    index = tmp_path / "c.index.pt"
    files.save(index, files.INDEX, {"embeddings": torch.eye(2), "fingerprint": {}})
    message = export_error(["--model", str(index), "--format", "onnx"])
    assert message.startswith(f"{index} is not a pretraining checkpoint or a classifier (it is a similarity index)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.index.pt"]
