#!/usr/bin/env bash
# GPU benchmarks: run on a machine with an NVIDIA GPU, from the repository root, in an
# environment with this project installed (`pip install -e ".[benchmarks]"`).
#
#   benchmarks/gpu_check.sh [OUT_DIR]      # default OUT_DIR: benchmarks/results
#
# 1. Engines in process (`aln bench engines`): torch eager on the CPU, ONNX Runtime, and torch
#    CUDA fp32 / fp16 / bf16 (autocast) at batch 1/8/32, with GFLOP/s against the card's measured
#    fp32 GEMM peak. Result: engines-<card>.json (the file name is the card's).
# 2. TensorRT, where `trtexec` is on PATH: fp16 plans of the exported Swin V2 tiny backbone,
#    throughput at batch 1/8/32 (trtexec's own report, kept as trtexec-b<N>-<card>.txt).
# 3. The served ensemble, where the embedded Triton server starts (`aln bench latency`, CPU
#    engines: the embedded server has no GPU backend): latency-<card>.json.
# Then `aln bench report benchmarks/results/*.json` puts the card beside the CPU results.
set -euo pipefail
OUT=${1:-benchmarks/results}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9' '-' | sed 's/-$//')

aln bench engines --backbones swinv2_tiny_window8_256,swinv2_base_window8_256 \
  --batches 1,8,32 --repeats 10 --out "$OUT/engines-$CARD.json"

if command -v trtexec >/dev/null; then
  WORK=$(mktemp -d)
  aln init-demo --out "$WORK/ckpt" --backbone swinv2_tiny_window8_256
  aln export "$WORK/ckpt" --out "$WORK/export"
  for BATCH in 1 8 32; do
    trtexec --onnx="$WORK/export/backbone_primary.onnx" --fp16 \
      --shapes=image:${BATCH}x3x256x256 --duration=10 > "$OUT/trtexec-b$BATCH-$CARD.txt" 2>&1
    grep -E "Throughput|Latency: min" "$OUT/trtexec-b$BATCH-$CARD.txt"
  done
else
  echo "trtexec not found: TensorRT engines not measured on this card"
fi

if python -c "import pytriton" 2>/dev/null; then
  aln bench latency --concurrency 1,4,8,16,32 --duration-s 20 --label aln_ensemble \
    --out "$OUT/latency-aln_ensemble-$CARD.json"
fi
