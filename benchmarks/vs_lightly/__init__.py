"""The parts of benchmarks/lightly_compare.py: `contrastive` against lightly 1.6.0 on CIFAR-10 JPEGs (issue 6).

One module per job, each a subcommand of the entry script:

  prepare         data.py            unpack the JPEG archive, build the first-N-per-class subset folder
  peak            flops.py           fp32 and bf16 square-matmul peak of this machine (GFLOP/s)
  throughput      throughput.py      parts 1 + 3: pairs of views per second, FLOPs per pair, % of the peak
  quality-epochs  quality_epochs.py  part 2: equal epochs, equal network (3x3 stem + max-pool), equal optimizer
  quality-time    quality_time.py    part 2b: equal wall-clock, each library's standard recipe
  profile         profile.py         where one training step of ours (and of lightly) spends its time

and what they share: common.py (constants, the results file, the kNN score, step timing), backbones.py (the
max-pool ResNet-18 both libraries train in part 2, built here and never registered in the package),
lightly_models.py + lightly_more.py (lightly's recipes around lightly's heads and losses), ours.py (our side
through contrastive.train.pretrain) and run_lightly.py (lightly's side in a plain PyTorch loop).

Both libraries read the same JPEG files with their own pipelines:
  ours     contrastive.image.data.load_data("folder:...") decodes every file once into a uint8 tensor (timed and
           reported on its own), then contrastive.train.pretrain trains on its fast path (whole batches
           augmented as tensors). The benchmark calls pretrain() itself and only timestamps each batch request
           (a contrastive.train.Callback whose wrap_batches wraps each epoch's iterator of batches), so the
           numbers are what a user of pretrain() gets.
  lightly  LightlyDataset (a torchvision DatasetFolder: PIL decode per item) + DataLoader with lightly's
           per-image transforms, in a plain PyTorch loop (lightly's README style) around lightly's heads,
           losses and utils.

Differences from ours that shape the comparison (ours: contrastive/config.py defaults): lightly's lr is
0.06 x batch/128 (0.12 at 256; ours 0.06 x batch/256) without warm-up and with weight decay on BN and biases;
its MoCo loss is symmetric (about 2x our FLOPs a pair; ours is the paper's asymmetric loss, T=0.2); its BYOL
heads are 1024 wide with a constant m=0.99 (ours 4096, tau 0.996 -> 1 cosine); its SimCLR head has 2 layers
(ours the 3-layer SimCLRv2 head), each view through BN on its own (ours: both views in one batch);
children[:-1] of ResNetGenerator drops the ReLU after the stem's BN (it lives in ResNet.forward). Part 2 uses
the same network and lr for both; parts 1 and 2b each library's own recipe, and part 3's FLOPs/pair makes
the throughput of unequal recipes comparable.

Every module imports lightly only inside the functions that need it, so the package (and the entry's --help)
loads without lightly installed.
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run from a checkout without installing: this checkout's contrastive
