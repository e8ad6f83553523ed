#!/usr/bin/env python
"""Side by side: `contrastive` against lightly 1.6.0 on CIFAR-10 JPEGs (issue 6).

Subcommands (each appends JSON lines to --results and prints a markdown table); the code of each lives in
benchmarks/vs_lightly/ (its __init__ says which module holds what, and how the two sides are set up):

  prepare         unpack the CIFAR-10 JPEG archive to --data-root (if train/ is missing) and build the
                  10k-image subset folder (first --per-class files of each class, sorted; symlinks)
  peak            fp32 and bf16 square-matmul peak of this machine (GFLOP/s)
  throughput      part 1 + 3: pairs of views per second, ResNet-18 with the CIFAR stem, 32 px, batch 256,
                  SimCLR / MoCo v2 / BYOL in each library's standard CIFAR recipe, data loading and
                  augmentation included; model FLOPs per pair and the fraction of the matmul peak
  quality-epochs  part 2: 10k training images, ResNet-18 (3x3 stride-1 stem, max-pool kept), 5 epochs,
                  SGD lr 0.06 x batch/256, momentum 0.9, wd 5e-4, cosine; weighted kNN on the 10k test images
  quality-time    part 2b: the same 10k images, each library trains N minutes with its standard recipe
  profile         where one training step of ours (and of lightly) spends its time (torch.profiler)

Run from the repository root:  python benchmarks/lightly_compare.py SUBCOMMAND --help
Needs `pip install -e .[bench]` (lightly==1.6.0; it leaves torch / torchvision as they are).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: vs_lightly is a package beside this file

from vs_lightly.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
