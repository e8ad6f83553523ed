"""What a run leaves on disk and reads back: its folder, checkpoints' contents, RNG state.

A checkpoint holds everything needed to continue bit for bit: model (with MoCo's queue
and pointer, BYOL's target and tau, as buffers), optimizer, scheduler, the step, the
position inside the epoch, every RNG state and the full resolved config. It also says
what a classifier starts from (`encoder`: the modality, backbone, the inputs it reads,
its width, and the part of the method's head fine-tuning keeps), so evaluation and
export rebuild networks from the checkpoint alone, never from a method's rules.
"""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from contrastive import files
from contrastive.checkpoint import list_checkpoints
from contrastive.config import PretrainConfig
from contrastive.errors import ContrastiveError
from contrastive.methods import method_module

# 2: adds "batch" (position inside the epoch) and "epoch_stats"; 3: adds "encoder", method and data
# options as dicts in "config".
CHECKPOINT_FORMAT = 3


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def new_run_dir(cfg: PretrainConfig) -> Path:
    if cfg.out:
        return Path(cfg.out)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.method}-{stamp}"


def resume_dir(cfg: PretrainConfig) -> Path:
    """--resume continues --out, or the newest runs/<method>-* folder that holds a checkpoint."""
    if cfg.out:
        return Path(cfg.out)
    candidates = sorted((p for p in Path("runs").glob(f"{cfg.method}-*") if list_checkpoints(p)), reverse=True)
    if not candidates:
        raise ContrastiveError(f"--resume found no runs/{cfg.method}-* folder with a checkpoint; pass --out RUN_DIR")
    return candidates[0]


def prepare_run_dir(path: Path, resume: bool, writer: bool = True) -> Path:
    """Refuse to overwrite a run; check the folder is writable (only the writing process creates it)."""
    if not resume and list_checkpoints(path):
        raise ContrastiveError(f"run folder {path} already holds checkpoints; pass --resume to continue it or another --out")
    if not writer:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ContrastiveError(f"cannot write to run folder {path} ({e.strerror}); choose another --out") from None
    return path


def write_config(run_dir: Path, cfg: PretrainConfig) -> None:
    files.write_json(run_dir / "config.json", cfg.to_dict())


def encoder_record(model, cfg: PretrainConfig, inputs: dict, feat_dim: int) -> dict:
    """What a classifier starts from: rebuilt by evaluation and export without knowing the method."""
    return {"modality": cfg.modality, "backbone": cfg.backbone, "inputs": dict(inputs), "feat_dim": feat_dim,
            "neck": model.classifier_neck()}


def data_record(data) -> dict:
    return {"name": data.name, "num_classes": data.num_classes, "classes": list(data.classes)}


def checkpoint_state(model, optimizer, scheduler, cfg: PretrainConfig, *, data: dict, encoder: dict, epoch: int,
                     batch: int, step: int, history: dict, epoch_stats: dict) -> dict:
    """epoch = epochs completed; batch = batches of epoch `epoch + 1` already done (0 at an epoch boundary)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "config": cfg.to_dict(),
        "data": data,
        "encoder": encoder,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "batch": batch,
        "step": step,
        "rng": rng_state(),
        "history": history,
        "epoch_stats": epoch_stats,
    }


def _refuse(path, key: str, saved, now) -> None:
    flag = key.replace("_", "-")
    fix = (f"--{flag}" if saved else f"--no-{flag}") if isinstance(saved, bool) else f"--{flag} {saved}"
    raise ContrastiveError(f"checkpoint {path} was trained with {key} '{saved}', not '{now}'; "
                           f"pass {fix} or start a new run with another --out")


def check_resumable(ckpt: dict, cfg: PretrainConfig, encoder: dict, path: Path) -> None:
    """The checkpoint must come from the same method and network shape as the run resuming it:
    method, backbone, the inputs the encoder reads, and the method options that shape weights."""
    saved = ckpt["config"]
    if ckpt.get("format", 0) < CHECKPOINT_FORMAT:
        raise ContrastiveError(f"checkpoint {path} was written by an older version of contrastive (format "
                               f"{ckpt.get('format', 0)}, now {CHECKPOINT_FORMAT}); start a new run with another --out")
    for key in ("method", "backbone"):
        if saved[key] != getattr(cfg, key):
            _refuse(path, key, saved[key], getattr(cfg, key))
    for key, value in ckpt["encoder"]["inputs"].items():
        if encoder["inputs"].get(key) != value:
            raise ContrastiveError(f"checkpoint {path} was trained on data read with {key} '{value}', not "
                                   f"'{encoder['inputs'].get(key)}'; pass the --data and data options it was "
                                   f"trained with, or start a new run with another --out")
    now = cfg.method_options.to_dict()  # the checkpoint holds the saved Options as a dict
    for key in method_module(cfg.method).SHAPE:
        if saved["method_options"].get(key) != now[key]:
            _refuse(path, key, saved["method_options"].get(key), now[key])
