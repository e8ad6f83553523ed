#!/usr/bin/env bash
# contrastive against lightly 1.6.0 on CIFAR-10 JPEGs (issue 6): every part, in order.
# Run from the repository root with nothing else on the machine; each part appends JSON lines to
# ${RESULTS:-benchmarks/results/lightly_compare.jsonl} and prints a markdown table (the log keeps them all).
#   usage: bash benchmarks/run_all.sh            # everything, about 5 h on the 2-core CPU (see below)
#          MINUTES=15 REPS=1 RESULTS=... LOG=... PYTHON=... are read from the environment
#          PARTS="throughput profile" bash benchmarks/run_all.sh
# Needs: pip install -e '.[bench]'  (lightly==1.6.0; torch / torchvision stay as installed)
#
# Nothing else may run meanwhile: on 2 cores a second process with OpenMP threads oversubscribes them, and in
# one sample that made our SimCLR step 5x slower (48 s instead of 9 s; lightly's 29 s instead of 14 s).
# Every record carries the 1-minute load average.
#
# Durations on the 2-core development machine (AMX / AVX512-BF16; ours trains in bf16, lightly in fp32),
# extrapolated from the quick samples in benchmarks/results/quick_samples.jsonl (batch 256, quiet machine:
# s/step ours 8 / 5 / 9, lightly 14 / 19 / 19 for SimCLR / MoCo / BYOL):
#   prepare          ~10 s    unpack the archive to /tmp/cifar if train/ is missing; 10k symlink subset
#   peak             ~10 s
#   throughput       ~55 min  (--reps 1) 3 methods x (ours 24 steps + lightly 23 steps x workers 0 and 2),
#                             the 50k-JPEG decode (12-18 s), FLOP counts; REPS=2 about doubles it
#   profile          ~17 min  3 methods x (1 + 3) steps each side, plus the NCHW / channels_last check
#   quality-epochs   ~80-100 min  3 methods x 2 libraries x 5 epochs x 10k images (the max-pool network
#                             costs 1.1-2.3 GFLOP a pair, ~1/4 of the CIFAR stem), 7 kNN evaluations (~1 min each)
#   quality-time     ~2 h     3 methods x 2 libraries x MINUTES (15) + calibration (~3 min a method) + 8 kNN
#                             evaluations of the CIFAR-stem network (~3.5 min each)
# Measured 2026-11-28: quality-epochs 83 min (Intel Xeon); quality-time with MINUTES=10 71 min (AMD EPYC).
# In all about 5 h.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python}
RESULTS=${RESULTS:-benchmarks/results/lightly_compare.jsonl}
LOG=${LOG:-benchmarks/results/run_all-$(date +%Y%m%d-%H%M%S).log}
PARTS=${PARTS:-"prepare peak throughput profile quality-epochs quality-time"}
MINUTES=${MINUTES:-15}
REPS=${REPS:-1}
mkdir -p "$(dirname "$RESULTS")"
$PY -c "import torch, torchvision, lightly; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'lightly', lightly.__version__)" | tee -a "$LOG"
for part in $PARTS; do
  start=$(date +%s)
  echo "=== $part ($(date)) load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$LOG"
  case $part in
    prepare)        $PY benchmarks/lightly_compare.py prepare --per-class 1000 ;;
    peak)           $PY benchmarks/lightly_compare.py peak --results "$RESULTS" ;;
    throughput)     $PY benchmarks/lightly_compare.py throughput --warmup 3 --steps 20 --reps "$REPS" --workers 0,2 \
                      --results "$RESULTS" ;;
    profile)        $PY benchmarks/lightly_compare.py profile --methods simclr,moco,byol --steps 3 --results "$RESULTS" ;;
    quality-epochs) $PY benchmarks/lightly_compare.py quality-epochs --per-class 1000 --epochs 5 --results "$RESULTS" ;;
    quality-time)   $PY benchmarks/lightly_compare.py quality-time --per-class 1000 --minutes "$MINUTES" \
                      --results "$RESULTS" ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac 2>&1 | tee -a "$LOG"
  echo "=== $part took $(( $(date +%s) - start )) s" | tee -a "$LOG"
done
