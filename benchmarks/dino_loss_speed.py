"""DINO's loss, forward + backward, before and after it summed the targets per student view.

Before: one (B, K) cross-entropy product per (teacher view, student view) pair, 14 of them with 2 + 6
crops. After (contrastive.losses.dino_loss): one product per student view against the sum of the
targets it meets. Both run here side by side, interleaved, on the same tensors; the ratio is the
result (this machine is noisy). Appends to benchmarks/results/dino_loss_speed.jsonl.

    python benchmarks/dino_loss_speed.py --batch 64 --reps 5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from contrastive.losses import dino_loss

RESULTS = Path(__file__).parent / "results" / "dino_loss_speed.jsonl"


def pairwise_dino_loss(student, teacher, center, ts=0.1, tt=0.04):
    """The per-pair form the library used before (Algorithm 1 read literally)."""
    log_p = [F.log_softmax(s / ts, dim=-1) for s in student]
    q = [F.softmax((t - center) / tt, dim=-1).detach() for t in teacher]
    total, pairs = 0.0, 0
    for i, target in enumerate(q):
        for v, prediction in enumerate(log_p):
            if v != i:
                total, pairs = total + (-target * prediction).sum(dim=-1).mean(), pairs + 1
    return total / pairs


def seconds(fn, student, teacher, center) -> float:
    leaves = [s.detach().requires_grad_() for s in student]
    t0 = time.perf_counter()
    fn(leaves, teacher, center).backward()
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--out-dim", type=int, default=65536)
    p.add_argument("--views", type=int, default=8, help="student views (2 global + local)")
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(a.batch, a.out_dim, generator=g) for _ in range(a.views)]
    teacher = [torch.randn(a.batch, a.out_dim, generator=g) for _ in range(2)]
    center = torch.randn(1, a.out_dim, generator=g)
    torch.testing.assert_close(dino_loss(student, teacher, center), pairwise_dino_loss(student, teacher, center))
    times = {"pairwise": [], "per_view": []}
    for _ in range(a.reps):  # interleaved, so that drifting load hits both alike
        times["pairwise"].append(seconds(pairwise_dino_loss, student, teacher, center))
        times["per_view"].append(seconds(dino_loss, student, teacher, center))
    best = {k: min(v) for k, v in times.items()}
    row = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "batch": a.batch, "out_dim": a.out_dim, "views": a.views,
           "threads": torch.get_num_threads(), "best_s": best, "speedup": best["pairwise"] / best["per_view"]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"batch {a.batch}, K {a.out_dim}, {a.views} views: pairwise {best['pairwise']:.3f} s, per view "
          f"{best['per_view']:.3f} s, {row['speedup']:.2f}x")


if __name__ == "__main__":
    main()
