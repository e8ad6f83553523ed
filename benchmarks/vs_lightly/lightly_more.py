"""Methods beyond SimCLR / MoCo / BYOL (--methods simsiam,barlow_twins,vicreg,dino,swav; issue 15) are our code
around lightly's heads, losses and transforms, sized like our defaults (not from lightly's benchmark script):
  SimSiam    SimSiamProjectionHead(512, 2048, 2048), SimSiamPredictionHead(2048, 512, 2048), NegativeCosineSimilarity,
             SimSiamTransform(input_size=32, gaussian_blur=0.0)
  Barlow Twins / VICReg  BarlowTwinsProjectionHead(512, 2048, 2048) + BarlowTwinsLoss() / VICRegProjectionHead(512,
             2048, 2048, 3) + VICRegLoss(); SimCLRTransform as SimCLR's
  DINO       DINOProjectionHead(512, 2048, 256, 65536), teacher EMA cosine 0.996 -> 1 (lightly's cosine_schedule),
             DINOLoss (teacher T 0.04, no warm-up); no last-layer freeze (ours: 1% of the steps)
  SwAV       SwaVProjectionHead(512, 2048, 128), SwaVPrototypes(128, 3000, 313 frozen steps), SwaVLoss; no queue
             (ours: 3840 embeddings after 7.5% of the steps)
  multi-crop DINOTransform(global_crop_size=32, local_crop_size=16, n_local_views=6, no blur) for both, the views
             of our "multicrop" recipe at 32 px; FLOPs and pairs/s count one image's 2 + 6 crops as a "pair"
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class LightlySimSiam(nn.Module):
    """lightly's SimSiam example with our default widths (2048-d 3-layer projector, 512-d predictor)."""

    def __init__(self, backbone: nn.Module, dim: int):
        super().__init__()
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules.heads import SimSiamPredictionHead, SimSiamProjectionHead

        self.backbone = backbone
        self.projection_head = SimSiamProjectionHead(dim, 2048, 2048)
        self.prediction_head = SimSiamPredictionHead(2048, 512, 2048)
        self.criterion = NegativeCosineSimilarity()

    def training_loss(self, x0, x1):
        z0, z1 = (self.projection_head(self.backbone(x).flatten(start_dim=1)) for x in (x0, x1))
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        return 0.5 * (self.criterion(p0, z1.detach()) + self.criterion(p1, z0.detach()))

    def trainable(self):
        return list(self.parameters())


class LightlyRedundancy(nn.Module):
    """lightly's Barlow Twins / VICReg examples with our default 2048-d, 3-layer heads and the losses' defaults."""

    def __init__(self, backbone: nn.Module, dim: int, method: str):
        super().__init__()
        from lightly.loss import BarlowTwinsLoss, VICRegLoss
        from lightly.models.modules.heads import BarlowTwinsProjectionHead, VICRegProjectionHead

        self.backbone = backbone
        if method == "barlow_twins":
            self.projection_head, self.criterion = BarlowTwinsProjectionHead(dim, 2048, 2048), BarlowTwinsLoss()
        else:
            self.projection_head, self.criterion = VICRegProjectionHead(dim, 2048, 2048, 3), VICRegLoss()

    def training_loss(self, x0, x1):
        return self.criterion(*(self.projection_head(self.backbone(x).flatten(start_dim=1)) for x in (x0, x1)))

    def trainable(self):
        return list(self.parameters())


class LightlyDINO(nn.Module):
    """lightly's DINO example with our defaults: head 2048 -> 256 -> 65536, teacher EMA 0.996 -> 1 on a cosine
    over the run (run_lightly sets total_steps), teacher temperature 0.04 without warm-up. Not as ours: no
    last-layer freeze (ours: the first 1% of the steps)."""

    def __init__(self, backbone: nn.Module, dim: int):
        super().__init__()
        from lightly.loss import DINOLoss
        from lightly.models.modules.heads import DINOProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        self.student_backbone, self.student_head = backbone, DINOProjectionHead(dim, 2048, 256, 65536)
        self.teacher_backbone = copy.deepcopy(backbone)
        self.teacher_head = DINOProjectionHead(dim, 2048, 256, 65536)
        self.teacher_head.load_state_dict(self.student_head.state_dict())
        deactivate_requires_grad(self.teacher_backbone)
        deactivate_requires_grad(self.teacher_head)
        self.criterion = DINOLoss(output_dim=65536, warmup_teacher_temp_epochs=0)
        self.backbone = self.student_backbone  # what the kNN reads
        self.step, self.total_steps = 0, 1

    def training_loss(self, *views):
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        m = cosine_schedule(self.step, max(1, self.total_steps), 0.996, 1.0)
        update_momentum(self.student_backbone, self.teacher_backbone, m)
        update_momentum(self.student_head, self.teacher_head, m)
        self.step += 1
        with torch.no_grad():
            teacher = [self.teacher_head(self.teacher_backbone(x).flatten(start_dim=1)) for x in views[:2]]
        student = [self.student_head(self.student_backbone(x).flatten(start_dim=1)) for x in views]
        return self.criterion(teacher, student, epoch=0)

    def trainable(self):
        return list(self.student_backbone.parameters()) + list(self.student_head.parameters())


class LightlySwAV(nn.Module):
    """lightly's SwAV example with our defaults: head 2048 -> 128, 3000 prototypes frozen for 313 steps,
    temperature 0.1, Sinkhorn epsilon 0.05 x 3. Not as ours: no queue (ours: 3840 embeddings after 7.5% of
    the steps, for batches below a few thousand)."""

    def __init__(self, backbone: nn.Module, dim: int):
        super().__init__()
        from lightly.loss import SwaVLoss
        from lightly.models.modules.heads import SwaVProjectionHead, SwaVPrototypes

        self.backbone = backbone
        self.projection_head = SwaVProjectionHead(dim, 2048, 128)
        self.prototypes = SwaVPrototypes(128, 3000, n_steps_frozen_prototypes=313)
        self.criterion = SwaVLoss()
        self.step = 0

    def training_loss(self, *views):
        self.prototypes.normalize()
        scores = [self.prototypes(nn.functional.normalize(self.projection_head(self.backbone(x).flatten(
            start_dim=1)), dim=1), self.step) for x in views]
        self.step += 1
        return self.criterion(scores[:2], scores[2:])

    def trainable(self):
        return list(self.parameters())
