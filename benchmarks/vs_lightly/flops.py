"""Part 3 and the `peak` job: model FLOPs per pair of views for both sides, and the machine's matmul peak, so
that pairs/s of unequal recipes become comparable (% of the peak each side reaches)."""

from __future__ import annotations

import math
import time

import torch

from .common import MULTICROP, say
from .lightly_models import build_lightly
from .ours import our_model_for_flops


def flops_per_pair(step, batch: int) -> float:
    """Model FLOPs (matmuls and convolutions, 2 per multiply-add, torch's FlopCounterMode) of one forward +
    backward of a training step on `batch` pairs, divided by `batch`."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss = step()
        loss.backward()
    return counter.get_total_flops() / batch


def method_flops(method: str, batch: int, ours_backbone: str | None, lightly_arch: str) -> dict:
    """FLOPs per pair of one training step, ours and lightly's, on the same random views."""
    sizes = [32, 32] + ([16] * 6 if method in MULTICROP else [])  # a multi-crop "pair" is 2 + 6 crops
    views = [torch.randn(batch, 3, s, s) for s in sizes]
    ours = our_model_for_flops(method, batch, ours_backbone).train()
    theirs = build_lightly(method, lightly_arch).train()
    return {"ours": flops_per_pair(lambda: ours(views)[0], batch),
            "lightly": flops_per_pair(lambda: theirs.training_loss(*views), batch)}


def matmul_peak(n: int = 2048, reps: int = 8) -> dict:
    """Best GFLOP/s of an n x n x n matmul in fp32 and bf16 (2 n^3 FLOPs each), with torch's thread count."""
    peak = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        for _ in range(2):
            a @ b
        best = math.inf
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
        peak[name] = 2 * n ** 3 / best / 1e9
    return peak


def cmd_peak(args, results):
    """fp32 / bf16 matmul peak: the better of two rounds of 8."""
    peaks = [matmul_peak(args.matmul_n) for _ in range(2)]
    peak = {k: max(p[k] for p in peaks) for k in peaks[0]}
    results.add(part="peak", matmul_n=args.matmul_n, gflops=peak)
    say(f"| matmul {args.matmul_n}^3 | fp32 GFLOP/s | bf16 GFLOP/s |\n| --- | --- | --- |\n"
        f"| best of 2x8 | {peak['fp32']:.0f} | {peak['bf16']:.0f} |")
    return peak
