"""Encoders of token sequences: one registry from a name to a network (N, L) int64 -> (N, D).

Both also give `local_features(x)` (N, D, L), the features of every position before pooling
(CPC and Deep InfoMax use it), zero at padded positions (id 0); padding is masked out of every
pooling, so a function's features do not depend on how much padding follows it.

- transformer: token + learned position embeddings, PyTorch's TransformerEncoderLayer
  (batch_first, pre-norm; its attention is scaled dot-product attention), masked mean pooling.
  Sizes of a small code encoder: 2 layers, width 128, 4 heads (a reduced CodeBERT-style encoder
  that trains on 2 CPU cores; ContraCode's transformer is 6 layers of 512).
- cnn: embeddings, three 1-D convolutions of width 5 with ReLU, max pooling over time (the
  sentence CNN of Kim 2014; the CNN of Russell et al. 2018 for vulnerability detection).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from contrastive.code.data import PAD
from contrastive.errors import ContrastiveError


class TokenTransformer(nn.Module):
    def __init__(self, vocab_size: int, max_tokens: int, width: int = 128, layers: int = 2, heads: int = 4,
                 dropout: float = 0.1):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width, padding_idx=PAD)
        self.position = nn.Embedding(max_tokens, width)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(width), enable_nested_tensor=False)
        self.out_dim = width

    def _positions(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, width) features of every position; padded positions hold junk that pooling ignores."""
        pad = x == PAD
        pad = pad & ~pad.all(1, keepdim=True)  # an all-padding row attends to itself rather than to nothing
        h = self.embed(x) + self.position(torch.arange(x.shape[1], device=x.device))[None]
        return self.layers(h, src_key_padding_mask=pad)

    def local_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, width, L), zero at padded positions."""
        return (self._positions(x) * (x != PAD)[..., None]).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return masked_mean(self._positions(x), x != PAD)


class TokenCNN(nn.Module):
    def __init__(self, vocab_size: int, width: int = 128, kernel: int = 5, depth: int = 3):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width, padding_idx=PAD)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv1d(width, width, kernel, padding=kernel // 2), nn.BatchNorm1d(width), nn.ReLU())
            for _ in range(depth))
        self.out_dim = width

    def local_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, width, L); padded positions are zero after every block, so padding reads as the edge."""
        keep = (x != PAD)[:, None, :].to(self.embed.weight.dtype)
        h = self.embed(x).transpose(1, 2)
        for block in self.blocks:
            h = block(h) * keep
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.local_features(x)
        keep = (x != PAD)[:, None, :]
        keep = keep | ~keep.any(2, keepdim=True)  # an empty row pools over its padding
        return h.masked_fill(~keep, float("-inf")).amax(2)


def masked_mean(h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(N, L, D), (N, L) bool -> (N, D): the mean over kept positions (zero for none)."""
    weights = keep.to(h.dtype)[..., None]
    return (h * weights).sum(1) / weights.sum(1).clamp_min(1.0)


ENCODERS: dict[str, Callable[[int, int], nn.Module]] = {
    "transformer": lambda vocab_size, max_tokens: TokenTransformer(vocab_size, max_tokens),
    "cnn": lambda vocab_size, max_tokens: TokenCNN(vocab_size),
}


def build_encoder(name: str, vocab_size: int, max_tokens: int) -> tuple[nn.Module, int]:
    """(encoder, feature width) for `name`: transformer or cnn."""
    if name not in ENCODERS:
        raise ContrastiveError(f"unknown code encoder '{name}'; choose one of: {', '.join(ENCODERS)}")
    net = ENCODERS[name](vocab_size, max_tokens)
    return net, net.out_dim
