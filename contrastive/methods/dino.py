"""DINO (Caron et al. 2021, arXiv:2104.14294): self-distillation with no labels.

Student: backbone -> head g_s; teacher: an EMA copy of both (no gradients). The head is a
3-layer MLP (GELU, no BN) to a 256-d bottleneck, L2-normalised, then a weight-normalised
linear layer without bias to K outputs (sec. 3.1, appendix; official DINOHead). With
multi-crop views (global crops first), the teacher sees the global crops only and the
student every crop; the loss is the cross-entropy between the teacher's centred,
sharpened softmax and the student's, over every pair of different views (Algorithm 1,
losses.dino_loss). After each step the center follows the mean teacher output,
c <- m c + (1 - m) mean(t) (center momentum 0.9), and the teacher's EMA rate goes from
0.996 to 1 on a half-cosine. The teacher temperature can warm up linearly.

Schedules are functions of training progress (step / total steps), not of epochs: the
official 30-epoch temperature warm-up of a 100-epoch run is `teacher_warmup 0.3`, its
1-epoch last-layer freeze `freeze_last_layer 0.01`. During the freeze the last layer's
gradient is zero (the official code drops it); a momentum optimizer or weight decay may
still move it a little. Not implemented: the official gradient clipping (3.0) and the
weight-decay schedule 0.04 -> 0.4 (the training loop owns both). Evaluation uses the
student's backbone (the paper evaluates the teacher's, which it finds slightly better).

Under torchrun the batch mean of the teacher output is summed over processes
(`distributed.all_reduce_sum`), so that the center is that of the global batch, as the
official code does; the loss itself is per image and DDP averages it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from contrastive import distributed as dist
from contrastive.batches import ViewSpec
from contrastive.fields import opt
from contrastive.losses import dino_loss
from contrastive.methods.base import MethodOptions
from contrastive.methods.crops import by_size
from contrastive.momentum import cosine_ema, ema_update, frozen_copy


@dataclass(frozen=True)
class Options(MethodOptions):
    out_dim: int = opt(65536, "K, the head's output width (DINO sec. 3.1 and official --out_dim: 65536)")
    proj_hidden: int = opt(2048, "head hidden width (DINO appendix / official DINOHead: 2048)")
    bottleneck: int = opt(256, "head bottleneck width before the weight-normalised layer (official: 256)")
    head_layers: int = opt(3, "MLP layers before the bottleneck's normalisation (DINO sec. 3.1: 3)")
    norm_last_layer: bool = opt(True, "fix the norm of the last layer's rows to 1 (official --norm_last_layer: "
                                      "true, more stable)")
    student_temperature: float = opt(0.1, "student softmax temperature (DINO sec. 3.1: 0.1)")
    teacher_temperature: float = opt(0.04, "teacher softmax temperature after the warm-up (official default 0.04; "
                                           "the paper's ViT-S runs 0.07)")
    warmup_teacher_temperature: float = opt(0.04, "teacher temperature at the start of the warm-up (official: 0.04)")
    teacher_warmup: float = opt(0.0, "fraction of training over which the teacher temperature rises linearly "
                                     "(official default 0 epochs; the paper's 30 of 100 epochs is 0.3)")
    center_momentum: float = opt(0.9, "m of the center update c <- m c + (1 - m) mean(teacher) (DINO sec. 3.1: 0.9)")
    ema: float = opt(0.996, "teacher EMA rate at the start, raised to 1 on a half-cosine (DINO sec. 3.1: 0.996)")
    freeze_last_layer: float = opt(0.01, "fraction of training with the last layer frozen (official: 1 epoch of 100)")

    # DINO sec. 3.1: 2 global + several local crops, BYOL's colour and blur; the modality's default number of
    # local crops (images: --local-crops)
    VIEWS: ClassVar[ViewSpec] = ViewSpec("multicrop", global_views=2, local_views=None)

    def distributed_note(self) -> str:
        return "DINO center from the teacher outputs of every process"


# Base lr per 256 images. SGD 0.03: the official ResNet-50 command (with weight decay 1e-4, scaled by batch / 256).
# AdamW 5e-4: the official ViT recipe (sec. 3.1 and main_dino.py, weight decay 0.04 -> 0.4). LARS 0.3: not
# from the paper, SimCLR's LARS value as for the other methods.
BASE_LR = {"sgd": 0.03, "lars": 0.3, "adamw": 5e-4}
SHAPE = ("out_dim", "proj_hidden", "bottleneck", "head_layers", "norm_last_layer")  # options that shape the weights


class Head(nn.Module):
    """MLP (GELU between layers, no BN) -> L2 normalisation -> weight-normalised Linear(bottleneck, K, no bias)."""

    def __init__(self, in_dim: int, hidden: int, bottleneck: int, out_dim: int, layers: int = 3,
                 norm_last_layer: bool = True):
        super().__init__()
        dims = [in_dim] + [hidden] * (layers - 1) + [bottleneck]
        blocks: list[nn.Module] = []
        for i in range(layers):
            blocks.append(nn.Linear(dims[i], dims[i + 1]))
            if i < layers - 1:
                blocks.append(nn.GELU())
        self.mlp = nn.Sequential(*blocks)
        for m in self.mlp:
            if isinstance(m, nn.Linear):  # official DINOHead init
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last = nn.Parameter(torch.empty(out_dim, bottleneck))  # v of the weight norm w = g v / |v|
        nn.init.kaiming_uniform_(self.last, a=5 ** 0.5)  # nn.Linear's init
        self.gain = None if norm_last_layer else nn.Parameter(torch.ones(out_dim, 1))  # g, starting at 1
        self.frozen_last = False  # set by DINO for the first part of training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)  # (n, bottleneck)
        v = self.last.detach() + 0 * self.last if self.frozen_last else self.last  # zero gradient while frozen
        w = F.normalize(v, dim=1)  # (K, bottleneck), rows of norm 1
        if self.gain is not None:
            w = w * (self.gain.detach() + 0 * self.gain if self.frozen_last else self.gain)
        return x @ w.T  # (n, K)


class DINO(nn.Module):
    def __init__(self, encoder: nn.Module, feat_dim: int, options: Options = Options()):
        super().__init__()
        o = options
        self.options = o
        self.encoder = encoder
        self.head = Head(feat_dim, o.proj_hidden, o.bottleneck, o.out_dim, o.head_layers, o.norm_last_layer)
        self.teacher_encoder = frozen_copy(self.encoder)
        self.teacher_head = frozen_copy(self.head)
        self.register_buffer("center", torch.zeros(1, o.out_dim))
        self.register_buffer("progress", torch.zeros((), dtype=torch.float64))  # step / total, set by update_target
        self.register_buffer("momentum", torch.tensor(o.ema, dtype=torch.float64))  # the last EMA rate used

    def teacher_temperature(self) -> float:
        o, p = self.options, float(self.progress)
        if o.teacher_warmup <= 0 or p >= o.teacher_warmup:
            return o.teacher_temperature
        return o.warmup_teacher_temperature + (o.teacher_temperature - o.warmup_teacher_temperature) * p / o.teacher_warmup

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        if len(views) < 2:
            raise ValueError("DINO needs at least two views (the global crops)")
        self.head.frozen_last = float(self.progress) < self.options.freeze_last_layer
        student = by_size(lambda x: self.head(self.encoder(x)), views)  # one (n, K) per view
        with torch.no_grad():
            teacher = by_size(lambda x: self.teacher_head(self.teacher_encoder(x)), views[:2])  # global crops only
        t_teacher = self.teacher_temperature()
        loss = dino_loss(student, teacher, self.center, self.options.student_temperature, t_teacher)
        self.update_center(torch.cat(teacher))
        return loss, {"teacher_temperature": t_teacher, "momentum": float(self.momentum)}

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """c <- m c + (1 - m) * the mean teacher output over the global batch (teacher: (rows, K) on this process)."""
        teacher = teacher.to(torch.promote_types(teacher.dtype, torch.float32))  # bf16 under autocast: sum in fp32
        total = dist.all_reduce_sum(torch.cat([teacher.sum(dim=0), teacher.new_tensor([len(teacher)])]))
        batch_center = total[:-1] / total[-1]  # (K,)
        m = self.options.center_momentum
        self.center.mul_(m).add_(batch_center.to(self.center.dtype)[None], alpha=1 - m)

    def classifier_neck(self) -> None:
        """Fine-tuning starts from the encoder alone (no head layer is kept)."""
        return None

    @torch.no_grad()
    def update_target(self, progress: float) -> None:
        """EMA step of the teacher with m = cosine_ema(m_base, k / K) (official cosine_scheduler to 1)."""
        self.progress.fill_(progress)
        m = cosine_ema(self.options.ema, progress)
        self.momentum.fill_(m)
        ema_update(self.teacher_encoder, self.encoder, m)
        ema_update(self.teacher_head, self.head, m)


def build(options: Options, encoder: nn.Module, feat_dim: int) -> DINO:
    return DINO(encoder, feat_dim, options)
