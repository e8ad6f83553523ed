"""Contrastive Predictive Coding (van den Oord et al. 2018, arXiv:1807.03748), as CPC v2 applies it
to images (Hénaff et al. 2020, arXiv:1905.09272), and to sequences.

The encoder's local features z = `encoder.local_features(x)` form a grid (N, D, H, W) of
latents, or a sequence (N, D, L), taken as a grid of one column. A context network that
sees only the rows above and the current row (a stack of row-causal convolutions, a small
stand-in for CPC v2's masked PixelCNN) gives c_ij; for k = 1..K rows ahead a linear map
W_k predicts z_{i+k, j} from c_ij, and InfoNCE scores each prediction against the true
latent and the latents at other positions and items of the batch (losses.cpc_info_nce,
plain dot products). The loss is the mean over k.

With `patch` p > 0 and 4-D inputs the grid is CPC v2's own: the input is cut into p x p
windows at stride p / 2 (CPC v2: 64 at stride 32 of 256, a 7 x 7 grid; 8 at stride 4 of
28 px digits gives 6 x 6), each encoded on its own by `encoder(window)`, so that no latent
sees the rows it has to predict. With p = 0 (default: it needs no knowledge of the input)
the grid is the backbone's local map, whose cells overlap, so predicting a few rows
ahead is easier than with windows.

Two of CPC v2's additions (Hénaff et al. 2020, sec. 4.1 and fig. 3) are options. `jitter` j
moves each window by its own random offset of up to j input positions along each axis (the input
edge-padded) while training: CPC v2 augments every patch on its own, so that two
overlapping windows cannot be matched by the input they share. `directions` 2 adds
bottom-up predictions and 4 also left-to-right and right-to-left ones (CPC v2's "BU" and
"HP"): the latent grid is turned by 180 or 90 degrees, the same context network reads it,
and each direction has its own predictors W_k (CPC v2 gives each direction its own context
network; sharing it is this file's choice, to keep the weights of a CPU-sized model).

Choices of this file: at most `max_pairs` (prediction, target) pairs per offset are drawn
at random for the InfoNCE (the full set is (N * H * W)^2 scores). For sequences every
position is used (no padding mask). Under torchrun the negatives are the process's own
(DDP averages the loss).

`cross_view` (not from the papers) takes the targets from a second augmented view of the
item: the context reads one view's rows, and the latents it must pick out are the other
view's (both ways, averaged), a whole-view counterpart of augmenting the context and
target patches apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from contrastive.batches import ViewSpec
from contrastive.fields import opt
from contrastive.losses import cpc_info_nce
from contrastive.methods.base import MethodOptions
from contrastive.methods.infomax import local_width


@dataclass(frozen=True)
class Options(MethodOptions):
    steps: int = opt(3, "K, how many rows (or positions) ahead are predicted (CPC v2: up to 5 rows of a 7x7 "
                        "grid; 3 here for the 7x7 map of 28 px digits)")
    context_hidden: int = opt(256, "width of the context network (not from the papers: a CPU-sized choice)")
    context_layers: int = opt(3, "row-causal residual blocks of the context network (CPC v2 uses a deeper masked-convolution network)")
    patch: int = opt(0, "0: the grid is the encoder's local map (or a sequence's positions); p > 0, for 4-D "
                        "inputs: p x p windows at stride p / 2, each encoded alone (CPC v2: 64 of 256 px; on 28 px "
                        "digits 14, a 3 x 3 grid, did best)")
    stride: int = opt(0, "with patch > 0: the step between windows; 0: half the window (CPC v2's overlap); "
                         "the window's side: windows that do not overlap")
    jitter: int = opt(0, "with patch > 0: each window moved by its own random offset of up to this many input "
                         "positions along each axis while training (CPC v2 augments each patch on its own; 0: none)")
    directions: int = opt(1, "1: top-down predictions; 2: also bottom-up; 4: also left-right and right-left "
                             "(CPC v2: BU and HP; a sequence takes 1 or 2)", choices=lambda: tuple(ROTATIONS))
    cross_view: bool = opt(False, "take the targets from a second augmented view of each item, so that context "
                                  "and targets never share an augmentation (a whole-view form of CPC v2's "
                                  "per-patch augmentation; not from the papers); off: one view")
    max_pairs: int = opt(2048, "at most this many prediction-target pairs per offset in the InfoNCE (not from the "
                               "papers: bounds the score matrix)")

    VIEWS: ClassVar[ViewSpec] = ViewSpec("light", global_views=1)  # one light view per item: CPC predicts within an item
    # cross_view: two views of SimCLR's family (colour, as CPC v2's colour dropping; crops)
    TWO_VIEWS: ClassVar[ViewSpec] = ViewSpec("simclr", global_views=2)

    def views(self) -> ViewSpec:
        """One view, or two with `cross_view`."""
        return self.TWO_VIEWS if self.cross_view else self.VIEWS


# Base lr per 256 images. AdamW 2e-4 (CPC v1 used Adam 2e-4). SGD 0.01: not from the papers; the scores are
# unnormalised dot products, and at 0.06 the loss diverged on the embedded digits (small_cnn, 2 epochs) while 0.01
# took kNN top-1 0.488 -> 0.561 in 3 epochs of 2000 images. LARS 0.3: SimCLR's, not checked.
BASE_LR = {"sgd": 0.01, "lars": 0.3, "adamw": 2e-4}
SHAPE = ("steps", "context_hidden", "context_layers", "patch", "directions")  # options that shape the weights
ROTATIONS = {1: (0,), 2: (0, 2), 4: (0, 1, 2, 3)}  # directions -> quarter turns of the grid (0: top-down)


def cut_windows(x: torch.Tensor, p: int, jitter: int = 0, stride: int = 0) -> tuple[torch.Tensor, int, int]:
    """(windows (N * rows * cols, C, p, p) in row-major order, rows, cols): the p x p windows of
    x (N, C, H, W) at `stride` (0: p // 2). With jitter j > 0 each window is moved by its own random
    offset in [-j, j] along each axis, the image edge-padded by j, the grid unchanged."""
    stride = stride or max(1, p // 2)
    size = p + 2 * jitter
    if jitter:
        x = F.pad(x, (jitter,) * 4, mode="replicate")
    windows = x.unfold(2, size, stride).unfold(3, size, stride)  # (N, C, rows, cols, size, size)
    n, c, rows, cols = windows.shape[:4]
    windows = windows.permute(0, 2, 3, 1, 4, 5).reshape(n * rows * cols, c, size, size)
    if jitter:
        m, span = len(windows), torch.arange(p, device=x.device)
        dy, dx = (torch.randint(0, 2 * jitter + 1, (m,), device=x.device) for _ in range(2))
        items = torch.arange(m, device=x.device)[:, None, None]
        windows = windows[items, :, (dy[:, None] + span)[:, :, None], (dx[:, None] + span)[:, None, :]]  # (M, p, p, C)
        windows = windows.permute(0, 3, 1, 2)
    return windows.contiguous(), rows, cols


class RowCausalBlock(nn.Module):
    """ReLU -> conv whose output at row i sees rows i - 1 and i only (3 columns wide) -> + input."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Conv2d(width, width, (2, 3))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return c + self.conv(F.pad(F.relu(c), (1, 1, 1, 0)))  # pad left, right, top: nothing from below


class CPC(nn.Module):
    def __init__(self, encoder: nn.Module, feat_dim: int, options: Options = Options()):
        super().__init__()
        o = options
        latent_dim = feat_dim if o.patch > 0 else local_width(encoder)  # windows: pooled features; else the local map
        self.encoder = encoder
        self.options = o
        self.context = nn.Sequential(nn.Conv2d(latent_dim, o.context_hidden, 1),
                                     *[RowCausalBlock(o.context_hidden) for _ in range(o.context_layers)])
        # W_k of direction d is predict[d * steps + k - 1]
        self.predict = nn.ModuleList(nn.Conv2d(o.context_hidden, latent_dim, 1)
                                     for _ in range(o.steps * len(ROTATIONS[o.directions])))

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """z as a grid (N, D, rows, columns): a sequence (N, D, L) is L rows of one column."""
        p = self.options.patch
        if p > 0 and x.dim() == 4:
            windows, rows, cols = cut_windows(x, p, self.options.jitter if self.training else 0,
                                              self.options.stride)
            z = self.encoder(windows)  # (N * rows * cols, feat_dim)
            return z.view(len(x), rows, cols, -1).permute(0, 3, 1, 2)  # (N, feat_dim, rows, cols)
        z = self.encoder.local_features(x)
        return z.unsqueeze(-1) if z.dim() == 3 else z

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        z = self.latents(views[0])  # (N, D, H, W)
        if not self.options.cross_view:
            pairs = [(z, z)]
        elif len(views) < 2:
            raise ValueError("CPC with cross_view needs two views of each item")
        else:  # each view's context predicts the other view's rows, both ways
            z2 = self.latents(views[1])
            pairs = [(z, z2), (z2, z)]
        steps = self.options.steps
        losses = []
        for context, targets in pairs:
            for d, turns in enumerate(ROTATIONS[self.options.directions]):
                turn = lambda t: torch.rot90(t, turns, dims=(2, 3))  # noqa: E731
                losses += self.direction_losses(turn(context), turn(targets), self.predict[d * steps:(d + 1) * steps])
        return torch.stack(losses).mean(), {}

    def direction_losses(self, z: torch.Tensor, targets: torch.Tensor, predict: nn.ModuleList) -> list[torch.Tensor]:
        """The InfoNCE of each offset k: from the rows of z (N, D, H, W) above, predict the rows of targets
        (z itself, or the same grid in a second view)."""
        c = self.context(z)  # (N, hidden, H, W); row i from rows <= i
        rows = z.shape[2]
        if rows < 2:
            raise ValueError(f"CPC needs at least 2 rows (positions) of latents in each direction, got {rows}"
                             + (" (a sequence takes --directions 1 or 2)" if z.shape[3] > 1 else ""))
        losses = []
        for k, w in enumerate(predict[:rows - 1], start=1):
            pred = w(c[:, :, :-k])  # (N, D, H - k, W): predictions for rows k..H-1
            target = targets[:, :, k:]  # (N, D, H - k, W)
            pred, target = (t.permute(0, 2, 3, 1).reshape(-1, t.shape[1]) for t in (pred, target))  # (M, D)
            if len(pred) > self.options.max_pairs:
                keep = torch.randperm(len(pred), device=pred.device)[:self.options.max_pairs]
                pred, target = pred[keep], target[keep]
            losses.append(cpc_info_nce(pred, target))
        return losses

    def classifier_neck(self) -> None:
        """Fine-tuning starts from the encoder alone (no head layer is kept)."""
        return None

    def update_target(self, progress: float) -> None:
        """CPC has no target network."""


def build(options: Options, encoder: nn.Module, feat_dim: int) -> CPC:
    return CPC(encoder, feat_dim, options)
