"""`contrastive export`: an encoder or a classifier as a file that runs without this package.

Pinned contract: the exported module sits behind its modality's own input preprocessing
(`handler.export_module`), so it takes the raw form the modality names (`handler.example_input`
makes a batch of it) and returns embeddings (N, feat_dim) or logits (N, num_classes). Any runtime can
then feed it without knowing the training statistics.

Each format is checked before it is kept: the written file is run back (onnxruntime, torch.jit.load,
or rebuilt from safetensors + JSON) on batches of 3 and 5, sizes the export never saw, so a batch
axis that was frozen at export time fails here instead of in production. Files go to temporary
names beside their targets and are renamed only once the check passes (contrastive.files): a failed
export leaves nothing behind.

safetensors holds weights only; `FILE.json` beside it holds what rebuilds the module with this
package (`load_safetensors`) and a sha256 of the weights and that JSON, so a file changed or damaged
after export is refused (a check, not a signature: whoever rewrites both can recompute it).
The command's flags and handler are in contrastive.cli.export.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from contrastive import files
from contrastive.errors import ContrastiveError
from contrastive.evaluate.classifier import KIND as CLASSIFIER
from contrastive.evaluate.classifier import Classifier, load_classifier, reader_of
from contrastive.evaluate.pretrained import build_neck, load_pretrained, state_mismatches
from contrastive.modality import Reader

ENCODER = "encoder"
SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts.pt", "safetensors": ".safetensors"}
EXAMPLE_BATCH = 2  # traced with 2 items: torch.export specialises a batch axis of size 0 or 1 to a constant
CHECK_BATCHES = (3, 5)  # run back on sizes the export never saw; the last one is the size reported
ONNX_OPSET = 18
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Exportable:
    kind: str  # ENCODER or CLASSIFIER
    module: nn.Module  # behind the modality's preprocessing, eval mode, on the cpu
    reader: Reader
    record: dict  # modality, backbone, inputs, feat_dim, neck: what rebuilds the module
    classes: list[str] | None  # a classifier's class names, in output order

    @property
    def output(self) -> str:
        return "logits" if self.kind == CLASSIFIER else "embeddings"


def load_exportable(path) -> Exportable:
    """A classifier file (its "kind" says so) or, failing that, a pretraining checkpoint's encoder.

    The encoder's record drops the neck: the pretraining head is not part of what is exported."""
    ckpt = files.load(path, (files.CHECKPOINT, CLASSIFIER))  # read once: its "kind" decides which loader rebuilds it
    if ckpt.get("kind") == CLASSIFIER:
        model, meta = load_classifier(path, ckpt)
        reader, record, classes = reader_of(model), dict(model.record), list(meta["data"]["classes"])
    else:
        pre = load_pretrained(path, ckpt)
        model, reader, record, classes = pre.encoder, pre.reader, dict(pre.record, neck=None), None
    kind = CLASSIFIER if classes is not None else ENCODER
    return Exportable(kind, wrapped(model, reader), reader, record, classes)


def wrapped(model: nn.Module, reader: Reader) -> nn.Module:
    return reader.handler.export_module(model.cpu().float(), reader.inputs).eval()


# --- running the written file back ------------------------------------------------------------

def differences(run: Callable[[torch.Tensor], torch.Tensor], ex: Exportable) -> dict[int, float]:
    """Largest |file - PyTorch| per check batch; a wrong output shape (a frozen batch axis) is an error."""
    x = ex.reader.handler.example_input(ex.reader.inputs, sum(CHECK_BATCHES))  # distinct items, split 3 + 5
    out = {}
    for batch in torch.split(x, CHECK_BATCHES):
        with torch.no_grad():
            want, got = ex.module(batch), run(batch)
        if tuple(got.shape) != tuple(want.shape):
            raise ContrastiveError(f"the exported file returns {tuple(got.shape)} for a batch of {len(batch)}, "
                                   f"PyTorch {tuple(want.shape)}; export it as another --format")
        out[len(batch)] = (got.float() - want.float()).abs().max().item()
    return out


def check(run, ex: Exportable, fmt: str, tolerance: float) -> float:
    """Print the difference on the largest check batch; raise above `tolerance` (NaN fails too)."""
    diffs = differences(run, ex)
    n = CHECK_BATCHES[-1]
    print(f"max abs difference {diffs[n]:.2e} on a batch of {n} (tolerance {tolerance:g})")
    for size, d in reversed(diffs.items()):  # the reported batch first
        if not d <= tolerance:
            raise ContrastiveError(f"the {fmt} file differs from PyTorch by {d:.2e} on a batch of {size}, above "
                                   f"--tolerance {tolerance:g}; raise --tolerance or choose another --format")
    return diffs[n]


# --- the formats: each writes `tmp` and checks it --------------------------------------------

def needs_extra(fmt: str, *modules: str) -> None:
    """One line naming the extra to install when a format's packages are missing."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise ContrastiveError(f"--format {fmt} needs {name}: pip install 'contrastive[export]'") from None


def write_onnx(ex: Exportable, tmp: Path, tolerance: float) -> None:
    """torch.export-based exporter (the default since torch 2.9) with a dynamic batch axis; weights
    inside the one file (external_data=False), so the file is all a runtime needs."""
    needs_extra("onnx", "onnx", "onnxscript", "onnxruntime")
    import onnxruntime

    example = ex.reader.handler.example_input(ex.reader.inputs, EXAMPLE_BATCH)
    with exporter_errors("onnx", ex):
        torch.onnx.export(ex.module, (example,), str(tmp), input_names=["input"], output_names=["output"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=ONNX_OPSET, dynamo=True,
                          external_data=False, verbose=False)
    session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    check(lambda x: torch.from_numpy(session.run(["output"], {"input": x.numpy()})[0]), ex, "onnx", tolerance)


def write_torchscript(ex: Exportable, tmp: Path, tolerance: float) -> None:
    """torch.jit.trace; the file loaded back is only ever the one just written here."""
    example = ex.reader.handler.example_input(ex.reader.inputs, EXAMPLE_BATCH)
    with warnings.catch_warnings():  # torch 2.14 marks TorchScript deprecated; the user asked for it by name
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
        with exporter_errors("torchscript", ex), torch.no_grad():
            torch.jit.save(torch.jit.trace(ex.module, (example,), check_trace=False), str(tmp))
        loaded = torch.jit.load(str(tmp)).eval()
    with torch.no_grad():
        check(loaded, ex, "torchscript", tolerance)


def safetensors_files(ex: Exportable, path: Path, tolerance: float) -> dict[Path, bytes]:
    """The weights and the JSON that rebuilds them, checked by rebuilding the module from both."""
    needs_extra("safetensors", "safetensors")
    from safetensors.torch import load, save

    weights = save({k: v.detach().contiguous() for k, v in ex.module.state_dict().items()})
    spec = {"kind": ex.kind, "record": ex.record, "weights": path.name, "input": input_contract(ex),
            "output": ex.output}
    if ex.classes is not None:
        spec.update(num_classes=len(ex.classes), classes=ex.classes)
    spec["sha256"] = digest_of(hashlib.sha256(weights), spec)
    rebuilt = rebuild(spec, load(weights), path)
    with torch.no_grad():
        check(rebuilt, ex, "safetensors", tolerance)
    return {path: weights, spec_path(path): (json.dumps(spec, indent=2) + "\n").encode()}


@contextlib.contextmanager
def exporter_errors(fmt: str, ex: Exportable):
    """An exporter that cannot express the network (an op it lacks) is one line naming the way out."""
    try:
        yield
    except (OSError, ContrastiveError):
        raise
    except Exception as e:  # noqa: BLE001 - the exporters raise many types; the user needs one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ContrastiveError(f"cannot export {ex.record['backbone']} as {fmt} ({first}); "
                               f"choose another --format") from None


# --- rebuilding from safetensors + JSON -------------------------------------------------------

def spec_path(weights: Path) -> Path:
    return weights.with_name(weights.name + ".json")


def load_safetensors(path) -> nn.Module:
    """The exported module (eval mode) from FILE and FILE.json, refusing weights changed after export."""
    needs_extra("safetensors", "safetensors")
    from safetensors.torch import load_file

    path = Path(path)
    try:
        spec = json.loads(spec_path(path).read_text())
        weights = sha256_of(path)
    except (OSError, ValueError) as e:
        raise ContrastiveError(f"cannot read {path} with its {spec_path(path).name} ({getattr(e, 'strerror', None) or e})"
                               f"; pass a .safetensors written by contrastive export") from None
    if not isinstance(spec, dict):
        raise ContrastiveError(f"{spec_path(path)} does not describe an exported module; export it again")
    if spec.get("sha256") != digest_of(weights, spec):
        raise ContrastiveError(f"{path} or its {spec_path(path).name} was changed after export (sha256 differs); "
                               f"export it again")
    try:
        return rebuild(spec, load_file(str(path)), path)
    except (KeyError, TypeError, AttributeError) as e:  # a JSON with the right sha256 but not our fields
        raise ContrastiveError(f"{spec_path(path)} does not describe an exported module (no {e}); "
                               f"export it again") from None


def rebuild(spec: dict, tensors: dict, path: Path) -> nn.Module:
    """The module `spec` describes, with `tensors` as its weights (names and shapes must match exactly)."""
    record = spec["record"]
    reader = Reader(record["modality"], record["inputs"])
    encoder, feat_dim = reader.build_encoder(record["backbone"])
    if spec["kind"] == CLASSIFIER:
        neck = build_neck(record["neck"]) if record.get("neck") else None
        encoder = Classifier(encoder, feat_dim, spec["num_classes"], neck=neck, record=record)
    module = reader.handler.export_module(encoder, reader.inputs)
    problems = state_mismatches(module, tensors)
    if problems:
        raise ContrastiveError(f"{path} does not match its {spec_path(path).name}: {'; '.join(problems[:3])}; "
                               f"export it again")
    module.load_state_dict(tensors)
    return module.eval()


def sha256_of(path: Path):
    """The running sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest


def digest_of(weights, spec: dict) -> str:
    """sha256 over the weights' bytes and the JSON's content (every field but the digest itself), so a
    change to either is found. It detects changed or damaged files; it is not a signature."""
    digest = weights.copy()
    described = {k: v for k, v in spec.items() if k != "sha256"}
    digest.update(json.dumps(described, sort_keys=True).encode())
    return digest.hexdigest()


# --- writing ----------------------------------------------------------------------------------

def planned_files(ex: Exportable, fmt: str, path: Path, tolerance: float) -> dict[Path, Callable[[Path], None]]:
    if fmt == "onnx":
        return {path: lambda tmp: write_onnx(ex, tmp, tolerance)}
    if fmt == "torchscript":
        return {path: lambda tmp: write_torchscript(ex, tmp, tolerance)}
    contents = safetensors_files(ex, path, tolerance)  # built and checked in memory before anything is written
    return {p: (lambda tmp, data=data: tmp.write_bytes(data)) for p, data in contents.items()}


def input_contract(ex: Exportable) -> str:
    """What the exported module takes, in the modality's words (e.g. 'float32 (N, 1, 28, 28) in [0, 1]')."""
    return ex.reader.handler.describe_input(ex.reader.inputs)


def output_width(ex: Exportable) -> int:
    with torch.no_grad():
        return ex.module(ex.reader.handler.example_input(ex.reader.inputs, 1)).shape[1]
