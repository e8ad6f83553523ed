#!/usr/bin/env bash
# The few-label pipeline on CIFAR-10 (JPEG ImageFolder) with ResNet-18 (CIFAR stem) on one GPU.
# Run from the repo root with the archive at .data/cifar10-jpg.tar.gz (a copy of
# ../shared/data/cifar10-jpg.tar.gz; never committed). Writes to ${OUT:-runs/gpu}.
#   usage: bash benchmarks/gpu_cifar_pipeline.sh [PRETRAIN_EPOCHS] [FINETUNE_EPOCHS] [DISTILL_EPOCHS]
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-runs/gpu}          # what to keep: log, results, report, plots (the device tool returns 8 files)
RUN=${RUN:-/tmp/cifar10-simclr}  # the whole run folder, checkpoints included
DATA=${CIFAR_DIR:-/tmp/cifar10}
mkdir -p "$OUT" "$DATA"
[ -d "$DATA/train" ] || tar xzf .data/cifar10-jpg.tar.gz -C "$DATA"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
start=$(date +%s)
timeout "${LIMIT_S:-100000}" python3 -m contrastive pipeline --data folder:$DATA --backbone resnet18 --method simclr \
  --batch-size "${BATCH:-512}" --epochs "${1:-15}" --finetune-epochs "${2:-10}" --distill-epochs "${3:-5}" \
  --out "$RUN" 2>&1 | tee "$OUT/pipeline.log"
echo "wall seconds: $(( $(date +%s) - start ))" | tee -a "$OUT/pipeline.log"
for f in results.json report.md accuracy_vs_labels.png pretraining.png tsne.png pretrain/metrics.jsonl; do
  cp "$RUN/$f" "$OUT/" 2>/dev/null || true
done
