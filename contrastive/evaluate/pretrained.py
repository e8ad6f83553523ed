"""Reading a pretraining checkpoint as an encoder (and the head layer fine-tuning starts from).

The checkpoint says what to rebuild (its "encoder" record: modality, backbone, the inputs
the encoder reads, its width, and the neck: the part of the method's head to keep), so
nothing here knows which method wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from contrastive.checkpoint import load_checkpoint
from contrastive.errors import ContrastiveError
from contrastive.heads import mlp
from contrastive.modality import Reader


@dataclass
class Pretrained:
    encoder: nn.Module  # the backbone with pretrained weights (keys "encoder.*" of the checkpoint)
    feat_dim: int
    head: nn.Module | None  # the neck fine-tuning starts from (SimCLRv2: the first head layer), else None
    reader: Reader  # how the encoder reads its items
    record: dict  # the checkpoint's encoder record: modality, backbone, inputs, feat_dim, neck
    config: dict  # the run's resolved PretrainConfig as a dict
    data: dict  # name, num_classes, classes of the pretraining data
    path: str


CLASSIFIER_KIND = "classifier"  # the "kind" of a classifier file (evaluate/classifier.py writes it)


def load_pretrained(path, ckpt: dict | None = None) -> Pretrained:
    """The encoder (and the neck, where the method keeps one) of a pretraining checkpoint, on the cpu.
    `ckpt`: the file's contents when the caller has read them already.

    Every failure is a one-line ContrastiveError naming the file: missing or corrupt (from
    load_checkpoint), a classifier, not a pretraining checkpoint, or weights that do not fit the backbone.
    """
    ckpt = load_checkpoint(path) if ckpt is None else ckpt
    if ckpt.get("kind") == CLASSIFIER_KIND:
        raise ContrastiveError(f"{path} is a classifier; this command embeds with a pretrained encoder: pass the "
                               f"checkpoint-epoch*.pt of the pretraining run (RUN/pretrain/ of the pipeline)")
    record, model = ckpt.get("encoder"), ckpt["model"]
    encoder_state = sub_state(model, "encoder.")
    if not isinstance(record, dict) or not {"modality", "backbone", "inputs"} <= set(record) or not encoder_state:
        raise ContrastiveError(f"{path} is not a pretraining checkpoint of this version (no encoder record or "
                               f"weights); pass a checkpoint-epoch*.pt written by contrastive pretrain")
    reader = Reader(record["modality"], record["inputs"])
    encoder, feat_dim = reader.build_encoder(record["backbone"])
    load_weights(encoder, encoder_state, path, f"backbone {record['backbone']}")
    head = None
    if record.get("neck"):
        head = build_neck(record["neck"])
        load_weights(head, neck_state(model, record["neck"]), path, "the head layer fine-tuning starts from")
        head.eval()
    encoder.eval()
    return Pretrained(encoder, feat_dim, head, reader, record, ckpt["config"], ckpt["data"], str(path))


def build_neck(neck: dict) -> nn.Sequential:
    """The first `keep` blocks of the MLP head the neck record describes (contrastive.heads.mlp's arguments)."""
    return mlp(**neck["mlp"])[:neck["keep"]]


def neck_state(state: dict, neck: dict) -> dict:
    """The weights of the neck's blocks (keys "<prefix><block>.*" with block < keep), renamed for build_neck."""
    kept = tuple(f"{i}." for i in range(neck["keep"]))
    return {k: v for k, v in sub_state(state, neck["prefix"]).items() if k.startswith(kept)}


def check_compatible(pre: Pretrained, data) -> None:
    """ContrastiveError when `data` is not what the pretrained encoder reads (another modality, other channels...)."""
    pre.reader.check(data, f"checkpoint {pre.path}")


def sub_state(state: dict, prefix: str) -> dict:
    """Entries of `state` under `prefix`, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def state_mismatches(module: nn.Module, state: dict) -> list[str]:
    """What keeps `state` from loading strictly into `module`: missing and unexpected keys, other shapes."""
    expected = module.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [f"{k} is {tuple(state[k].shape)} in the file, {tuple(v.shape)} here"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape]
    return problems


def load_weights(module: nn.Module, state: dict, path, what: str) -> None:
    """Strict load_state_dict whose failure is a one-line ContrastiveError listing the first mismatches."""
    problems = state_mismatches(module, state)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ContrastiveError(
            f"checkpoint {path} does not match {what}: {'; '.join(problems[:3])}{more}; it was written by another "
            f"version of the network: use the code that wrote it, or pretrain again")
    module.load_state_dict(state)
