"""Pretraining throughput of the code encoders (bag, cnn, transformer) on Juliet functions (issue 24).

Claim checked: the fastText-style bag (contrastive.code.encoders.TokenBag) pretrains many times faster than
the cnn and the transformer, and its cost barely grows from 128 to 512 tokens. Each measurement is SimCLR
through the one training loop (`pretrain`, views included, kNN monitor off), global batch 256, the precision
`auto` picks (bf16 autocast where the CPU has it natively, contrastive.device), timed by a callback over the
steps after the first, in wall and in CPU seconds. Every configuration runs once per round, the rounds
interleaved, so that the drifting load of this shared machine hits all alike; the ratios to the bag of the
same round, length and threads are the result. The transformer at 512 tokens (minutes a step) runs in the
first round only. Also: 1 and 2 torch threads at 128 tokens (on a loaded machine two threads wait on each
other), the bag at 2^16 and 2^20 hash buckets (the table's size is its main cost), and the family sizes that
--batch-groups packs. Writes benchmarks/results/code_encoders.json.

    CONTRASTIVE_CACHE=/tmp/ccache_enc python benchmarks/code_encoders.py --cases 2000 --steps 2 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from contrastive.callbacks import Callback
from contrastive.code import encoders
from contrastive.code.data import load_code
from contrastive.config import KnnConfig, PretrainConfig
from contrastive.train import pretrain

RESULTS = Path(__file__).parent / "results" / "code_encoders.json"
JULIET = "juliet:/tmp/jcache/juliet-c"
ONCE = {("transformer", 512)}  # minutes a step: the first round only


class StepClock(Callback):
    """Wall and CPU seconds (all threads of this process) between consecutive steps (views, forward, backward,
    update), from the second step on. Other jobs on the machine stretch the wall time, far less the CPU time."""

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_start(self, run) -> None:
        self.last = None

    def on_step(self, run, loss: float, finite: bool) -> None:
        now = (time.perf_counter(), time.process_time())
        if self.last is not None:
            self.wall.append(now[0] - self.last[0])
            self.cpu.append(now[1] - self.last[1])
        self.last = now


def timed_run(data, backbone: str, threads: int, steps: int, folder: str) -> tuple[float, float, str]:
    """(wall and CPU seconds per step of batch 256, the precision used), medians over `steps` steps after a
    first untimed one, on `threads` torch threads. The run folder (checkpoints) is removed afterwards."""
    clock, before = StepClock(), torch.get_num_threads()
    cfg = PretrainConfig(method="simclr", backbone=backbone, batch_size=256, epochs=1, max_steps=steps + 1,
                         out=folder, knn=KnnConfig(every=0), checkpoint_minutes=0)
    torch.set_num_threads(threads)
    try:
        result = pretrain(cfg, data=data, log=lambda *a: None, callbacks=[clock])
    finally:
        torch.set_num_threads(before)
        shutil.rmtree(folder, ignore_errors=True)
    return statistics.median(clock.wall), statistics.median(clock.cpu), result.config.precision


def with_buckets(buckets: int) -> str:
    """Registers bag_b<log2 buckets> for this process only (the benchmark's own entry; the package's is `bag`)."""
    name = f"bag_b{buckets.bit_length() - 1}"
    encoders.ENCODERS[name] = lambda vocab_size, max_tokens: encoders.TokenBag(vocab_size, buckets=buckets)
    return name


def family_sizes(data) -> dict:
    """How many functions a family (Juliet flaw variant) holds: what a grouped batch of 256 is made of."""
    sizes = sorted(Counter(data.train.groups).values())
    return {"families": len(sizes), "median": statistics.median(sizes), "max": sizes[-1],
            "mean": round(sum(sizes) / len(sizes), 2), "families_per_batch_256": round(256 * len(sizes) / sum(sizes), 1)}


def configurations(backbones: list[str], lengths: list[int], threads: list[int]) -> list[tuple[str, int, int]]:
    """(backbone, max_tokens, threads): every backbone and length on the first thread count; the others at the
    first length only; then the bag's bucket sweep there."""
    first_length, first_threads = lengths[0], threads[0]
    out = [(b, n, first_threads) for n in lengths for b in backbones]
    out += [(b, first_length, t) for t in threads[1:] for b in backbones]
    out += [(with_buckets(2 ** k), first_length, first_threads) for k in (16, 20)]  # 2^18 is `bag` itself
    return out


def measure(datasets: dict, configs: list[tuple[str, int, int]], steps: int, rounds: int) -> dict:
    """config -> {"wall": [...], "cpu": [...]} seconds per step, one per round, rounds interleaved."""
    seconds: dict = {c: {"wall": [], "cpu": []} for c in configs}
    precision = None
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for backbone, length, threads in configs:
                if r > 0 and (backbone, length) in ONCE:
                    continue
                folder = os.path.join(tmp, f"{backbone}-{length}-{threads}-{r}")
                wall, cpu, precision = timed_run(datasets[length], backbone, threads, steps, folder)
                seconds[(backbone, length, threads)]["wall"].append(wall)
                seconds[(backbone, length, threads)]["cpu"].append(cpu)
                print(f"round {r + 1}: {backbone:12s} L={length:3d} threads={threads}  {wall:8.3f} s/step "
                      f"({cpu:8.3f} CPU-s)  {256 / wall:7.1f} functions/s", flush=True)
    return {"seconds": seconds, "precision": precision}


def summary(seconds: dict) -> list[dict]:
    """Per configuration: median functions/s (wall, and per CPU-second), and per round its time over the
    bag's of the same round, length and threads (wall and CPU)."""
    rows = []
    for (backbone, length, threads), times in seconds.items():
        bag = seconds[("bag", length, threads)]
        rows.append({"backbone": backbone, "max_tokens": length, "threads": threads,
                     "seconds_per_step": [round(t, 3) for t in times["wall"]],
                     "cpu_seconds_per_step": [round(t, 3) for t in times["cpu"]],
                     "functions_per_s": round(256 / statistics.median(times["wall"]), 1),
                     "functions_per_cpu_s": round(256 / statistics.median(times["cpu"]), 1),
                     "times_the_bag_per_round": [round(t / b, 2) for t, b in zip(times["wall"], bag["wall"])],
                     "cpu_times_the_bag_per_round": [round(t / b, 2) for t, b in zip(times["cpu"], bag["cpu"])]})
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=2000, help="Juliet test cases (a fixed draw)")
    p.add_argument("--steps", type=int, default=2, help="timed steps per run, after one untimed")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--lengths", default="128,512", help="max_tokens; the first also gets the threads and buckets")
    p.add_argument("--threads", default="1,2", help="torch threads; the first for every configuration")
    p.add_argument("--backbones", default="bag,cnn,transformer")
    return p


def main():
    a = parser().parse_args()
    os.environ.setdefault("CONTRASTIVE_CACHE", "/tmp/ccache_enc")  # another helper's parse cache, where present
    lengths, threads = [int(x) for x in a.lengths.split(",")], [int(x) for x in a.threads.split(",")]
    t0 = time.time()
    datasets = {n: load_code(JULIET, juliet_cases=a.cases, max_tokens=n) for n in lengths}
    load_s = time.time() - t0
    found = measure(datasets, configurations(a.backbones.split(","), lengths, threads), a.steps, a.rounds)
    first = datasets[lengths[0]]
    record = {"when": time.strftime("%Y-%m-%d %H:%M"), "command": "CONTRASTIVE_CACHE=/tmp/ccache_enc python "
              "benchmarks/code_encoders.py " + " ".join(f"--{k} {v}" for k, v in vars(a).items()),
              "precision": found["precision"], "load_seconds_both_lengths": round(load_s, 1),
              "train_functions": len(first.train), "vocab": len(first.vocab),
              "load_average_1min_at_end": os.getloadavg()[0], "families": family_sizes(first),
              "runs": summary(found["seconds"])}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
