"""The command line of benchmarks/lightly_compare.py: one subcommand per job, the options they share, and the
dispatch. Every subcommand appends JSON lines to --results and prints a markdown table."""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import torch

from .common import DEFAULT_RESULTS, METHODS, Results, environment, say
from .data import cmd_prepare
from .flops import cmd_peak
from .quality_epochs import cmd_quality_epochs
from .quality_time import cmd_quality_time
from .step_profile import cmd_profile
from .throughput import cmd_throughput

DESCRIPTION = "Side by side: `contrastive` against lightly 1.6.0 on CIFAR-10 JPEGs (issue 6)."
JOBS = {"prepare": cmd_prepare, "peak": cmd_peak, "throughput": cmd_throughput, "quality-epochs": cmd_quality_epochs,
        "quality-time": cmd_quality_time, "profile": cmd_profile}


def add_common(sp, per_class=None, methods=",".join(METHODS)):  # noqa: B008
    """The options every subcommand takes."""
    sp.add_argument("--data-root", default=os.environ.get("CIFAR_JPG", "/tmp/cifar"),
                    help="CIFAR-10 JPEGs: DIR/train/<class>/*.jpg, DIR/test/<class>/*.jpg (default /tmp/cifar)")
    sp.add_argument("--archive", default=None, help="cifar10-jpg.tar.gz to unpack when DIR/train is missing")
    sp.add_argument("--per-class", type=int, default=per_class,
                    help="train on the first N files of each class (a symlink folder next to DIR)")
    sp.add_argument("--test-per-class", type=int, default=None,
                    help="kNN queries: only the first N test files of each class (smoke runs; default all)")
    sp.add_argument("--methods", default=methods)
    sp.add_argument("--batch", type=int, default=256)
    sp.add_argument("--results", default=str(DEFAULT_RESULTS), help="JSON-lines file the records go to")
    sp.add_argument("--lightly-precision", choices=("fp32", "bf16"), default="fp32",
                    help="lightly's recipe trains in fp32 (the Lightning Trainer's default); bf16 autocast "
                         "shows what it would gain")
    sp.add_argument("--ours-precision", choices=("auto", "fp32", "bf16"), default="auto")
    sp.add_argument("--matmul-n", type=int, default=2048)
    sp.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")


def add_throughput(sub) -> None:
    sp = sub.add_parser("throughput", help="part 1 + 3")
    add_common(sp)
    sp.add_argument("--warmup", type=int, default=3)
    sp.add_argument("--steps", type=int, default=20)
    sp.add_argument("--reps", type=int, default=1, help="repetitions, interleaved ours / lightly per method")
    sp.add_argument("--workers", default="0,2", help="lightly DataLoader workers to try (comma-separated)")
    sp.add_argument("--lightly-arch", choices=("generator", "torchvision"), default="generator",
                    help="generator: lightly's ResNetGenerator (its recipe); torchvision: our exact encoder")
    sp.add_argument("--no-flops", action="store_true", help="skip the FLOP count and the matmul peak")


def add_quality(sub) -> None:
    sp = sub.add_parser("quality-epochs", help="part 2")
    add_common(sp, per_class=1000)
    sp.add_argument("--epochs", type=int, default=5)
    sp.add_argument("--lightly-workers", type=int, default=2)
    sp = sub.add_parser("quality-time", help="part 2b")
    add_common(sp, per_class=1000)
    sp.add_argument("--minutes", type=float, default=15.0, help="training budget per library and method")
    sp.add_argument("--calibration-steps", type=int, default=5, help="timed steps (after 2) to size the budget")
    sp.add_argument("--lightly-workers", type=int, default=2)


def add_profile(sub) -> None:
    sp = sub.add_parser("profile", help="where a step's time goes, ours and lightly")
    add_common(sp, methods="simclr")
    sp.add_argument("--steps", type=int, default=3)
    sp.add_argument("--lightly-workers", type=int, default=0)
    sp.add_argument("--lightly-arch", choices=("generator", "torchvision"), default="generator")
    sp.add_argument("--no-layout-check", dest="layout_check", action="store_false",
                    help="skip the NCHW / channels_last comparison of our encoder")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    add_common(sub.add_parser("prepare", help="unpack CIFAR-10 JPEGs and build the subset folder"), per_class=1000)
    add_common(sub.add_parser("peak", help="fp32 / bf16 matmul peak"))
    add_throughput(sub)
    add_quality(sub)
    add_profile(sub)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    results = Results(Path(args.results), environment())
    say(f"{args.command}: torch {results.env['torch']}, lightly {results.env['lightly']}, "
        f"{results.env['torch_threads']} threads, {results.env['cores']} cores, load {os.getloadavg()[0]:.2f}; "
        f"results -> {args.results}")
    JOBS[args.command](args, results)
