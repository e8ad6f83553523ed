"""Features of a dataset under an encoder, computed once in eval mode, through the one batch producer."""

from __future__ import annotations

import math
import sys

import torch
from torch import nn
from tqdm import tqdm

from contrastive import distributed as dist
from contrastive.batches import batches


@torch.no_grad()
def extract_features(encoder: nn.Module, items, reader, device: torch.device | str = "cpu",
                     batch_size: int = 512, progress: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, D) float32 on cpu, labels (N,) int64; -1 where unlabelled) with the encoder in eval mode.

    `reader` (contrastive.modality.Reader) says how the encoder reads the items. Items held in
    memory go through as whole batches of tensors; others through a DataLoader. Under torchrun
    each process encodes its contiguous share and the shares are gathered in order, so every
    process returns the same features of all N items. `progress`: a label for a progress bar on
    stderr (commands that a user waits for; the training loop's monitor passes none).
    """
    device = torch.device(device)
    was_training = encoder.training
    encoder.eval()
    part = dist.shard(len(items))
    order = torch.arange(part.start, part.stop, dtype=torch.long)
    feats, labels = [], []
    produced = batches(items, reader.eval_views(items), order, batch_size, device, epoch_seed=0)
    if progress is not None:
        produced = tqdm(produced, total=math.ceil(len(order) / batch_size), desc=progress, unit="batch",
                        leave=False, disable=None, file=sys.stderr)
    for views, y in produced:
        feats.append(encoder(views[0]).float())
        labels.append(y.long())
    if not feats:  # this process's share is empty (or the data is): it still takes part in the gather
        example = reader.handler.example_input(reader.inputs, 1).to(device)  # only its output width is used
        feats, labels = [encoder(example).float()[:0]], [torch.empty(0, dtype=torch.long, device=device)]
    encoder.train(was_training)
    return dist.gather_uneven(torch.cat(feats)).cpu(), dist.gather_uneven(torch.cat(labels)).cpu()


@torch.no_grad()
def output_width(module: nn.Module, items, reader, device: torch.device | str = "cpu") -> int:
    """The width of a module's output on the first item (for user-supplied encoders)."""
    was_training = module.training
    module.eval()
    views, _ = next(batches(items, reader.eval_views(items), torch.zeros(1, dtype=torch.long), 1, torch.device(device),
                            epoch_seed=0))
    width = module(views[0]).shape[1]
    module.train(was_training)
    return width
