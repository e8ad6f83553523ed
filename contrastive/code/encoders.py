"""Encoders of token sequences: one registry from a name to a network (N, L) int64 -> (N, D).

Each also gives `local_features(x)` (N, D, L), the features of every position before pooling
(CPC and Deep InfoMax use it), zero at padded positions (id 0); padding is masked out of every
pooling, so a function's features do not depend on how much padding follows it.

- transformer: token + learned position embeddings, PyTorch's TransformerEncoderLayer
  (batch_first, pre-norm; its attention is scaled dot-product attention), masked mean pooling.
  Sizes of a small code encoder: 2 layers, width 128, 4 heads (a reduced CodeBERT-style encoder
  that trains on 2 CPU cores; ContraCode's transformer is 6 layers of 512).
- cnn: embeddings, three 1-D convolutions of width 5 with ReLU, max pooling over time (the
  sentence CNN of Kim 2014; the CNN of Russell et al. 2018 for vulnerability detection).
- bag: a bag of token n-grams (unigrams with their own rows, bigrams and trigrams hashed into
  HASH_BUCKETS rows), averaged by an EmbeddingBag and lifted by Linear-LayerNorm-ReLU (fastText,
  Joulin et al. 2017, "Bag of Tricks for Efficient Text Classification"). No sequence model: its
  cost barely grows with the length, for the whole Juliet suite on a CPU (issue 24).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
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
        self.local_dim = self.out_dim = width

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
        self.local_dim = self.out_dim = width

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


# Rows for the hashed bigrams and trigrams. Measured on 2,000 Juliet test cases (3,634 training functions, 4
# stored variants each): 7,038 distinct bigrams and 56,150 trigrams, growing about 1.5x per doubling of the
# functions, so some 3e5 on the whole suite (74k functions). fastText hashes into 2M rows for a text corpus;
# here every row is updated densely at every step (the optimizers decay it), so the table's size is the bag's
# main cost: a SimCLR step of 256 functions (128 tokens, 1 thread, bf16) took 0.06 s at 2^16 rows, 0.19 s at
# 2^18, 0.54 s at 2^20, against 1.4 s for the cnn (benchmarks/results/code_encoders.json). 2^18 (67 MB at
# width 64) holds most of the suite's n-grams apart for ~40 s more per epoch of the suite than 2^16 (which would
# put some five n-grams in every row); collisions fall mostly on rare n-grams, which weigh little in a mean.
HASH_BUCKETS = 2 ** 18
_HASH_PRIME, _HASH_BASE = 2_147_483_647, 1_000_003  # 2^31 - 1: the rolling hash stays far inside int64


def shifted(x: torch.Tensor, back: int) -> torch.Tensor:
    """(N, L): at position i the token `back` places before it, PAD before the start."""
    return F.pad(x, (back, 0), value=PAD)[:, :x.shape[1]]


def ngram_ids(x: torch.Tensor, vocab_size: int, buckets: int = HASH_BUCKETS, orders: int = 3) -> torch.Tensor:
    """(N, L) token ids -> (N, orders, L): row k holds the id of the (k+1)-gram that ends at each position.

    Unigrams keep their token id (rows 0 .. vocab_size - 1); longer n-grams are hashed in order (so "a b" and
    "b a" differ) into vocab_size .. vocab_size + buckets - 1; an n-gram that holds padding or starts before the
    sequence gets PAD, which EmbeddingBag leaves out of the mean."""
    rows, valid = [x], x != PAD
    for order in range(2, orders + 1):
        valid = valid & (shifted(x, order - 1) != PAD)  # the window of order n is the one of n - 1, one longer
        h = torch.full_like(x, order)  # the order seeds the hash: bigrams and trigrams are different polynomials
        for back in range(order - 1, -1, -1):
            h = (h * _HASH_BASE + shifted(x, back)) % _HASH_PRIME
        rows.append(torch.where(valid, vocab_size + h % buckets, torch.full_like(x, PAD)))
    return torch.stack(rows, 1)


class TokenBag(nn.Module):
    """A fastText bag of n-grams (Joulin et al. 2017): the mean embedding of a function's unigrams, bigrams and
    trigrams, then Linear-LayerNorm-ReLU. LayerNorm, not BatchNorm: the same block lifts the pooled and the
    per-position features, and an item's features do not depend on its batch (grouped batches hold twins)."""

    # The table learns with AdamW (contrastive.optim.preferred_optimizer reads this). A row's gradient is 1/n of the
    # mean's over a bag of n ids (some 500 for a Juliet function), so SGD at the pipeline's rates left the table at
    # its random start: after 30 epochs of SimCLR it had only shrunk by the weight decay, and pretraining, the probe
    # and fine-tuning all read a fixed random projection of the n-grams. Measured on the whole Juliet suite (issue
    # 24; 8 epochs of SimCLR, 3 draws of 1% labels, PR-AUC of "vulnerable" on the 5,944 validation functions):
    # tuned logistic probe 0.535 (SGD) -> 0.552 (AdamW); fine-tuned 100 steps 0.551 (SGD) -> 0.658 (AdamW), from
    # random init 0.646 (AdamW).
    optimizer = "adamw"

    # embed_dim 64: fastText's unsupervised vectors use 100 and its classifiers 10; 64 halves the dense table
    # update of 128 (see HASH_BUCKETS). width 256: twice the cnn's and the transformer's 128, cheap here (one
    # Linear per function); not tuned.
    def __init__(self, vocab_size: int, width: int = 256, embed_dim: int = 64, buckets: int = HASH_BUCKETS,
                 orders: int = 3):
        super().__init__()
        self.vocab_size, self.buckets, self.orders = vocab_size, buckets, orders
        self.embed = nn.EmbeddingBag(vocab_size + buckets, embed_dim, mode="mean", padding_idx=PAD)
        # fastText's start, uniform in +-1/dim (its Model init); PyTorch's N(0, 1) is 64 times larger, so the same
        # AdamW steps would move it 64 times less in proportion. The padding row stays zero.
        with torch.no_grad():
            self.embed.weight.uniform_(-1.0 / embed_dim, 1.0 / embed_dim)[PAD].zero_()
        self.lift = nn.Sequential(nn.Linear(embed_dim, width), nn.LayerNorm(width), nn.ReLU())
        self.local_dim = self.out_dim = width

    def ids(self, x: torch.Tensor) -> torch.Tensor:
        return ngram_ids(x, self.vocab_size, self.buckets, self.orders)  # (N, orders, L)

    def local_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, width, L): at each position the lifted mean of the n-grams that end there; zero at padding."""
        ids = self.ids(x)
        n, orders, length = ids.shape
        h = self.embed(ids.transpose(1, 2).reshape(n * length, orders)).view(n, length, -1)  # (N, L, embed_dim)
        return (self.lift(h) * (x != PAD)[..., None]).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, width): the lifted mean over every n-gram of the function (all-padding rows: the lift of zero)."""
        return self.lift(self.embed(self.ids(x).flatten(1)))  # one bag of orders * L ids per row


def masked_mean(h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(N, L, D), (N, L) bool -> (N, D): the mean over kept positions (zero for none)."""
    weights = keep.to(h.dtype)[..., None]
    return (h * weights).sum(1) / weights.sum(1).clamp_min(1.0)


ENCODERS: dict[str, Callable[[int, int], nn.Module]] = {
    "transformer": lambda vocab_size, max_tokens: TokenTransformer(vocab_size, max_tokens),
    "cnn": lambda vocab_size, max_tokens: TokenCNN(vocab_size),
    "bag": lambda vocab_size, max_tokens: TokenBag(vocab_size),
}


ENCODER_CLASSES = {"transformer": TokenTransformer, "cnn": TokenCNN, "bag": TokenBag}


def build_encoder(name: str, vocab_size: int, max_tokens: int) -> tuple[nn.Module, int]:
    """(encoder, feature width) for `name`: transformer, cnn or bag."""
    if name not in ENCODERS:
        raise ContrastiveError(f"unknown code encoder '{name}'; choose one of: {', '.join(ENCODERS)}")
    net = ENCODERS[name](vocab_size, max_tokens)
    return net, net.out_dim
