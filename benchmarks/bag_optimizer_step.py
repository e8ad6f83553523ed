"""What a pretraining step of the code `bag` costs under each optimizer (issue 24: the table learns with AdamW).

The bag's 16.9M-parameter n-gram table gets a dense gradient every step, so the optimizer's update of it is a
large share of the step. One step = two token views of 256 functions of 256 tokens (random ids, the suite's
vocabulary size), the bag, a SimCLR projection head, NT-Xent, backward, optimizer step; bf16 autocast as the
pipeline uses on this CPU. Configurations: SGD with momentum (the old default), AdamW as torch builds it by
default (foreach), and AdamW with fused=True. Rounds interleave the configurations, so the drifting load of this
shared machine hits all alike; the result is each one's median seconds a step and its ratio to SGD's.

    python benchmarks/bag_optimizer_step.py [--rounds 5 --steps 5 --threads 2]

writes benchmarks/results/bag_optimizer_step.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from contrastive.code.encoders import TokenBag
from contrastive.losses import nt_xent

OUT = Path(__file__).parent / "results" / "bag_optimizer_step.json"
VOCAB, LENGTH, BATCH = 8000, 256, 256


def build(kind: str):
    torch.manual_seed(0)
    bag = TokenBag(VOCAB)
    model = nn.Sequential(bag, nn.Linear(256, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 128))
    if kind == "sgd":
        return model, torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4, fused=kind == "adamw_fused")


def step(model, optimizer, x1, x2) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = model(torch.cat([x1, x2])).float()
    loss = nt_xent(z[:BATCH], z[BATCH:], 0.2)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(1)
    x1, x2 = (torch.randint(3, VOCAB, (BATCH, LENGTH), generator=g) for _ in range(2))
    kinds = ("sgd", "adamw", "adamw_fused")
    built = {k: build(k) for k in kinds}
    for k in kinds:  # a warm-up step each (allocations, optimizer state)
        step(*built[k], x1, x2)
    seconds: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(a.rounds):
        for k in kinds:
            t = time.perf_counter()
            for _ in range(a.steps):
                step(*built[k], x1, x2)
            seconds[k].append((time.perf_counter() - t) / a.steps)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    result = {"command": "python benchmarks/bag_optimizer_step.py " + " ".join(
                  f"--{k} {v}" for k, v in vars(a).items()),
              "torch": torch.__version__, "seconds_per_step": median,
              "ratio_to_sgd": {k: round(v / median["sgd"], 3) for k, v in median.items()}, "rounds": seconds}
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("seconds_per_step", "ratio_to_sgd")}))


if __name__ == "__main__":
    main()
