"""Features of a dataset under an encoder, computed once in eval mode."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from contrastive import distributed as dist
from contrastive.augment import eval_transform
from contrastive.data import ImageSet, Transformed


@torch.no_grad()
def extract_features(encoder: nn.Module, images: ImageSet, image_size: int, channels: int,
                     device: torch.device | str = "cpu", batch_size: int = 512,
                     num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, D) float32 on cpu, labels (N,) int64) with the encoder in eval mode.

    Under torchrun each process encodes its contiguous share of the images and the shares
    are gathered in order, so every process returns the same features of all N images.
    """
    was_training = encoder.training
    encoder.eval()
    part = dist.shard(len(images))
    mine = images if dist.world_size() == 1 else images.subset(range(part.start, part.stop))
    loader = DataLoader(Transformed(mine, eval_transform(image_size, channels)), batch_size=batch_size,
                        shuffle=False, num_workers=num_workers)
    feats, labels = [], []
    for x, y in loader:
        feats.append(encoder(x.to(device, non_blocking=True)).float())
        labels.append(torch.as_tensor(y, device=device))
    encoder.train(was_training)
    out_dim = feats[0].shape[1] if feats else encoder_width(encoder, image_size, channels, device)
    feats = torch.cat(feats) if feats else torch.empty(0, out_dim, device=device)
    labels = torch.cat(labels).long() if labels else torch.empty(0, dtype=torch.long, device=device)
    return dist.gather_uneven(feats).cpu(), dist.gather_uneven(labels).cpu()


@torch.no_grad()
def encoder_width(encoder: nn.Module, image_size: int, channels: int, device) -> int:
    """Feature width of the encoder (for a process whose share of a tiny dataset is empty)."""
    was_training = encoder.training
    encoder.eval()
    width = encoder(torch.zeros(1, channels, image_size, image_size, device=device)).shape[1]
    encoder.train(was_training)
    return width
