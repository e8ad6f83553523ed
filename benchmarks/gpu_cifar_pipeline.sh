#!/usr/bin/env bash
# The few-label pipeline on CIFAR-10 (JPEG ImageFolder) with ResNet-18 (CIFAR stem) on one GPU.
# Run from the repo root with the archive at .data/cifar10-jpg.tar.gz (a copy of
# ../shared/data/cifar10-jpg.tar.gz; never committed). Writes to ${OUT:-runs/gpu}.
#   usage: bash benchmarks/gpu_cifar_pipeline.sh [PRETRAIN_EPOCHS] [FINETUNE_EPOCHS] [DISTILL_EPOCHS]
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT" /tmp/cifar10
[ -d /tmp/cifar10/train ] || tar xzf .data/cifar10-jpg.tar.gz -C /tmp/cifar10
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
start=$(date +%s)
python3 -m contrastive pipeline --data folder:/tmp/cifar10 --backbone resnet18 --method simclr \
  --batch-size 512 --epochs "${1:-15}" --finetune-epochs "${2:-10}" --distill-epochs "${3:-5}" \
  --out "$OUT/cifar10-simclr" 2>&1 | tee "$OUT/pipeline.log"
echo "wall seconds: $(( $(date +%s) - start ))" | tee -a "$OUT/pipeline.log"
cp "$OUT/cifar10-simclr/results.json" "$OUT/results.json" 2>/dev/null || true
cp "$OUT/cifar10-simclr/report.md" "$OUT/report.md" 2>/dev/null || true
cp "$OUT/cifar10-simclr/pretrain/metrics.jsonl" "$OUT/metrics.jsonl" 2>/dev/null || true
