"""Parts 1 + 3, the `throughput` job: pairs of views per second, ResNet-18 with the CIFAR stem, 32 px, batch 256,
each method in each library's standard CIFAR recipe, data loading and augmentation included; model FLOPs per
pair and the fraction of the matmul peak.

Runs are interleaved per method and repetition (ours, then lightly with each worker count), so a change in the
machine's load hits both sides alike; each record carries the load average before its run."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from contrastive.device import resolve_precision

from .common import CPU, fmt, say
from .data import class_subset, ensure_cifar, load_ours
from .flops import cmd_peak, method_flops
from .lightly_loop import run_lightly
from .ours import run_ours


def pairs_per_s(d: list[float], batch: int, warmup: int, steps: int) -> float:
    window = d[warmup:warmup + steps]
    if len(window) < steps:
        raise RuntimeError(f"only {len(d)} timed steps, need {warmup + steps}")
    return batch * len(window) / sum(window)


def time_ours(method: str, rep: int, data, args, results) -> float:
    load0 = os.getloadavg()[0]
    r = run_ours(method, data, batch=args.batch, precision=args.ours_precision,
                 steps=args.warmup + args.steps + 1)  # +1: the last step's end is the next request
    rate = pairs_per_s(r["durations"], args.batch, args.warmup, args.steps)
    results.add(part="throughput", library="contrastive", method=method, rep=rep, workers=0,
                precision=r["precision"], batch=args.batch, warmup=args.warmup, steps=args.steps,
                pairs_per_s=rate, step_seconds=r["durations"][args.warmup:args.warmup + args.steps],
                loadavg_before=round(load0, 2), backbone=r["config"].backbone,
                cifar_stem=r["config"].data_options.cifar_stem, augment="batch (uint8 tensor cache)")
    say(f"  {method} rep {rep} ours ({r['precision']}): {rate:.1f} pairs/s")
    return rate


def time_lightly(method: str, rep: int, workers: int, train_dir: Path, args, results) -> float:
    load0 = os.getloadavg()[0]
    r = run_lightly(method, train_dir, arch=args.lightly_arch, workers=workers, batch=args.batch,
                    precision=args.lightly_precision, lr=0.06 * args.batch / 128, steps=args.warmup + args.steps)
    rate = pairs_per_s(r["durations"], args.batch, args.warmup, args.steps)
    results.add(part="throughput", library="lightly", method=method, rep=rep, workers=workers,
                precision=args.lightly_precision, batch=args.batch, warmup=args.warmup, steps=args.steps,
                pairs_per_s=rate, step_seconds=r["durations"][args.warmup:args.warmup + args.steps],
                loadavg_before=round(load0, 2), backbone=args.lightly_arch,
                dataset_index_seconds=r["index_seconds"], augment="per-image PIL (LightlyDataset)")
    say(f"  {method} rep {rep} lightly workers={workers} ({args.lightly_precision}): {rate:.1f} pairs/s")
    return rate


def method_row(method: str, rates: dict, args, peak: dict | None) -> dict:
    """Medians over the repetitions, the best lightly worker count, and (with the peak) FLOPs per pair."""
    med = {k: statistics.median(v) for k, v in rates.items()}
    best_key = max((k for k in med if k.startswith("lightly")), key=med.get)
    row = {"method": method, **med, "lightly_best": best_key, "ratio": med["ours"] / med[best_key]}
    if peak is not None:
        fl = method_flops(method, args.batch, None, args.lightly_arch)
        row.update(gflop_pair_ours=fl["ours"] / 1e9, gflop_pair_lightly=fl["lightly"] / 1e9,
                   model_gflops_ours=fl["ours"] * med["ours"] / 1e9,
                   model_gflops_lightly=fl["lightly"] * med[best_key] / 1e9)
    return row


def cmd_throughput(args, results):
    """Part 1 (and 3): interleaved per method and repetition: ours, lightly with each worker count."""
    root = ensure_cifar(Path(args.data_root), args.archive)
    train_root = class_subset(root, args.per_class) if args.per_class else root
    spec = f"folder:{train_root / 'train'}"  # no train/ inside: an unlabeled folder of all training JPEGs
    data, decode_s, n = load_ours(spec)
    results.add(part="decode", spec=spec, images=n, seconds=decode_s, images_per_s=n / decode_s)
    say(f"ours: load_data({spec!r}) decoded {n} JPEGs into a uint8 tensor in {decode_s:.1f} s "
        f"({n / decode_s:.0f} img/s), once per process")
    peak = cmd_peak(args, results) if not args.no_flops else None
    workers = [int(w) for w in args.workers.split(",")]
    rows = []
    for method in args.methods.split(","):
        rates = {"ours": [], **{f"lightly-w{w}": [] for w in workers}}
        for rep in range(args.reps):
            rates["ours"].append(time_ours(method, rep, data, args, results))
            for w in workers:
                rates[f"lightly-w{w}"].append(time_lightly(method, rep, w, train_root / "train", args, results))
        rows.append(method_row(method, rates, args, peak))
    if peak is not None:  # the peak again at the end; the better of the two is the machine's
        end = cmd_peak(args, results)
        peak = {k: max(peak[k], end[k]) for k in peak}
        our_peak = peak["bf16" if resolve_precision(args.ours_precision, CPU) == "bf16" else "fp32"]
        their_peak = peak["bf16" if args.lightly_precision == "bf16" else "fp32"]
        for row in rows:
            row.update(mfu_ours=row["model_gflops_ours"] / our_peak,
                       mfu_lightly=row["model_gflops_lightly"] / their_peak)
    for row in rows:
        results.add(part="throughput_summary", batch=args.batch, warmup=args.warmup, steps=args.steps,
                    reps=args.reps, ours_precision=resolve_precision(args.ours_precision, CPU),
                    lightly_precision=args.lightly_precision, lightly_arch=args.lightly_arch, peak_gflops=peak,
                    **row)
    print_throughput(rows, workers, peak, args)


def print_throughput(rows: list[dict], workers: list[int], peak: dict | None, args) -> None:
    cols = ["ours"] + [f"lightly-w{w}" for w in workers]
    say(f"\nThroughput, pairs/s (median of {args.reps}), batch {args.batch}, {args.steps} steps after "
        f"{args.warmup} warm-up, data loading + augmentation included; ours "
        f"{resolve_precision(args.ours_precision, CPU)}, lightly {args.lightly_precision} ({args.lightly_arch})")
    say("| method | " + " | ".join(cols) + " | ours / best lightly | GFLOP/pair ours | GFLOP/pair lightly "
        "| model GFLOP/s ours | lightly | % of peak ours | lightly |")
    say("|" + " --- |" * (len(cols) + 8))
    for r in rows:
        say(f"| {r['method']} | " + " | ".join(fmt(r[c]) for c in cols) + f" | {r['ratio']:.2f}x | "
            + " | ".join([fmt(r.get("gflop_pair_ours"), 2), fmt(r.get("gflop_pair_lightly"), 2),
                          fmt(r.get("model_gflops_ours"), 0), fmt(r.get("model_gflops_lightly"), 0),
                          fmt(100 * r["mfu_ours"] if "mfu_ours" in r else None, 1),
                          fmt(100 * r["mfu_lightly"] if "mfu_lightly" in r else None, 1)]) + " |")
    if peak:
        say(f"matmul peak ({args.matmul_n}^3, best of start and end): fp32 {peak['fp32']:.0f} GFLOP/s, "
            f"bf16 {peak['bf16']:.0f} GFLOP/s; "
            f"% of peak = model FLOPs/pair x pairs/s / the peak of the precision each side trains in")
