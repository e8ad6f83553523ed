"""Features of a dataset under an encoder, computed once in eval mode."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from contrastive.augment import eval_transform
from contrastive.data import ImageSet, Transformed


@torch.no_grad()
def extract_features(encoder: nn.Module, images: ImageSet, image_size: int, channels: int,
                     device: torch.device | str = "cpu", batch_size: int = 512,
                     num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, D) float32 on cpu, labels (N,) int64) with the encoder in eval mode."""
    was_training = encoder.training
    encoder.eval()
    loader = DataLoader(Transformed(images, eval_transform(image_size, channels)), batch_size=batch_size,
                        shuffle=False, num_workers=num_workers)
    feats, labels = [], []
    for x, y in loader:
        feats.append(encoder(x.to(device, non_blocking=True)).float().cpu())
        labels.append(torch.as_tensor(y))
    encoder.train(was_training)
    return torch.cat(feats), torch.cat(labels).long()
