"""Token-level views, as batched tensor ops on int64 (B, V, L) items (row 0: the function, rows
1..: its precomputed source-level variants, contrastive.code.transforms).

One recipe serves every method (the method's recipe name is ignored): a view is

1. one of the item's V rows, chosen at random: the original or a semantics-preserving variant
   (renaming, dead code, reordering; ContraCode, Jain et al. 2021);
1b. a fresh consistent renaming, drawn every step (semantics-preserving: a one-to-one map of the
   function's VAR_n onto VAR_m, FUNC_n onto FUNC_m, ... as token ids; ContraCode's identifier
   modification, done on ids so it costs no parsing);
2. a random crop: a contiguous window of e.g. 60-100% of the tokens (not semantics-preserving; the
   subsequence views of ContraCode sec. 3.1 and of random cropping in vision);
3. with some probability, one span of 10% of the tokens deleted (not semantics-preserving; span
   deletion as in CodeBERT-style and CLEAR sentence augmentations, Wu et al. 2020);
4. a share of the tokens replaced by <mask> (not semantics-preserving; BERT masks 15%, Devlin et
   al. 2019).

Steps 2-4 are off by default (TokenRecipe below: validation preferred steps 1 and 1b alone).

The encoder's own dropout gives two forward passes of one input different features as well
(SimCSE's dropout views, Gao et al. 2021). Classifier training uses step 1 and a light mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from contrastive.code.data import MASK, PAD
from contrastive.code.transforms import RESERVED


# Pretraining uses steps 1 and 1b only: the semantics-preserving views. Chosen on the validation split
# (benchmarks/results/code_ablation.md, 1,000 Juliet cases, SimCLR, cnn): the generic views below erase
# the few tokens that tell a flawed function from its fix (a crop of 60% keeps the flaw or not at
# random) and did no better: at 5 epochs kNN20 0.745 with crop + span deletion + 10% masking against
# 0.761 with the semantic views alone (random-init encoder 0.718), 1% probe F1 0.325 against 0.396;
# at 15 epochs see the table. The generic steps stay available as fields.
@dataclass(frozen=True)
class TokenRecipe:
    crop: tuple[float, float] = (1.0, 1.0)  # share of the tokens a crop keeps (uniform); was (0.6, 1.0)
    delete_prob: float = 0.0  # chance of deleting one span; was 0.5
    delete_share: float = 0.1  # the span's share of the tokens
    mask_rate: float = 0.0  # share of tokens replaced by <mask>; was 0.1


LIGHT = TokenRecipe(crop=(1.0, 1.0), delete_prob=0.0, mask_rate=0.05)  # classifier training


def _uniform(shape, g: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=g, device=g.device)


def pick_rows(items: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(B, V, L) -> (B, L): one row per item, uniformly among its V."""
    b, v, _ = items.shape
    rows = (_uniform((b,), g) * v).long().clamp_max(v - 1).to(items.device)
    return items[torch.arange(b, device=items.device), rows]


def lengths(tokens: torch.Tensor) -> torch.Tensor:
    return (tokens != PAD).sum(1)


def shifted(tokens: torch.Tensor, source: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """out[b, j] = tokens[b, source[b, j]] where keep[b, j], else <pad>."""
    gathered = tokens.gather(1, source.clamp(0, tokens.shape[1] - 1))
    return torch.where(keep, gathered, torch.full_like(gathered, PAD))


def crop(tokens: torch.Tensor, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    """A contiguous window of a random share in [low, high] of each sequence, moved to the front."""
    n = lengths(tokens)
    share = low + (high - low) * _uniform(n.shape, g).to(tokens.device)
    size = torch.maximum((share * n).ceil().long(), torch.ones_like(n)).minimum(n.clamp_min(1))
    start = ((n - size + 1).clamp_min(1) * _uniform(n.shape, g).to(tokens.device)).long()
    position = torch.arange(tokens.shape[1], device=tokens.device)[None]
    return shifted(tokens, start[:, None] + position, position < size[:, None])


def delete_span(tokens: torch.Tensor, prob: float, share: float, g: torch.Generator) -> torch.Tensor:
    """With probability `prob` per sequence, one span of `share` of its tokens removed (the rest closes up)."""
    n = lengths(tokens)
    span = (share * n).long() * (_uniform(n.shape, g).to(tokens.device) < prob)
    start = ((n - span + 1).clamp_min(1) * _uniform(n.shape, g).to(tokens.device)).long()
    position = torch.arange(tokens.shape[1], device=tokens.device)[None]
    source = torch.where(position < start[:, None], position, position + span[:, None])
    return shifted(tokens, source, position < (n - span)[:, None])


def mask(tokens: torch.Tensor, rate: float, g: torch.Generator) -> torch.Tensor:
    hit = (_uniform(tokens.shape, g).to(tokens.device) < rate) & (tokens != PAD)
    return torch.where(hit, torch.full_like(tokens, MASK), tokens)


def placeholder_blocks(vocab: list[str]) -> list[tuple[int, int]]:
    """(first id, count) of each kind's placeholders in a vocabulary (they are stored in order)."""
    blocks = []
    for kind, count in RESERVED.items():
        first = f"{kind}_1"
        if first in vocab:
            start = vocab.index(first)
            if vocab[start:start + count] == [f"{kind}_{i}" for i in range(1, count + 1)]:
                blocks.append((start, count))
    return blocks


def rename(tokens: torch.Tensor, blocks: list[tuple[int, int]], g: torch.Generator) -> torch.Tensor:
    """Each sequence's placeholder ids permuted within their kind, one random permutation per sequence."""
    for start, count in blocks:
        perm = _uniform((tokens.shape[0], count), g).to(tokens.device).argsort(1)  # (B, count)
        inside = (tokens >= start) & (tokens < start + count)
        mapped = start + perm.gather(1, (tokens - start).clamp(0, count - 1))
        tokens = torch.where(inside, mapped, tokens)
    return tokens


def token_view(items: torch.Tensor, recipe: TokenRecipe, g: torch.Generator, blocks=()) -> torch.Tensor:
    """One view of a batch of items: int64 (B, V, L) -> int64 (B, L); `blocks`: placeholder_blocks of the
    vocabulary, to rename (none: no renaming beyond the stored variants)."""
    tokens = pick_rows(items, g)
    if blocks:
        tokens = rename(tokens, blocks, g)
    if recipe.crop != (1.0, 1.0):
        tokens = crop(tokens, *recipe.crop, g)
    if recipe.delete_prob > 0:
        tokens = delete_span(tokens, recipe.delete_prob, recipe.delete_share, g)
    if recipe.mask_rate > 0:
        tokens = mask(tokens, recipe.mask_rate, g)
    return tokens


def one_item(views_of_batch, item: torch.Tensor) -> list[torch.Tensor]:
    """The per-item form of a batched view function, seeded from torch's RNG (the loader seeds it per item)."""
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
    return [v[0] for v in views_of_batch(item[None], g)]


def trimmed(views: list[torch.Tensor]) -> list[torch.Tensor]:
    """The views cut to the longest sequence among them (at least 1): padding columns cost time, and
    Juliet's functions are mostly far shorter than the maximum length. All views keep one width, so a
    method may stack them."""
    longest = max(int(lengths(v).max()) if v.numel() else 1 for v in views)
    return [v[:, :max(1, longest)] for v in views]
