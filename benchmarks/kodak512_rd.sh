#!/usr/bin/env bash
# Kodak-512 rate-distortion benchmark (docs/evaluation.md): the classical baselines at a ladder
# of target rates, plus any models given as extra arguments, then the RD plot and BD-rates.
#
#   COD_WEIGHTS_DIR=~/cod-weights bash benchmarks/kodak512_rd.sh \
#       --codec codlite-0.0312 --weights codlite-0.0312=w/codlite-0.0312.safetensors --device cuda
#
# Environment: KODAK (image folder, default ../shared/data/kodak), OUT (default results/kodak512),
# BPP (baseline targets), METRICS (default all; e.g. psnr-rgb,ms-ssim-rgb without backbone weights),
# COD (the command, default `cod`; `python -m cod` works too).
set -euo pipefail
cd "$(dirname "$0")/.."
KODAK=${KODAK:-../shared/data/kodak}
OUT=${OUT:-results/kodak512}
BPP=${BPP:-0.005,0.01,0.02,0.05,0.1,0.2,0.4,0.8}
METRICS=${METRICS:-all}
COD=${COD:-cod}
export HF_HUB_OFFLINE=1

$COD bench "$KODAK" --crop 512 --metrics "$METRICS" -o "$OUT" --bpp "$BPP" \
    --codec jpeg --codec webp --codec avif --codec avif-down2 --codec avif-down4 \
    --codec jpegxl --codec jpeg2000 --codec hevc "$@"
$COD plot "$OUT"/*.json -o "$OUT/rd.png" --title "Kodak 512x512"
for f in "$OUT"/*.json; do
    [ "$f" = "$OUT/jpeg.json" ] && continue
    $COD bdrate "$OUT/jpeg.json" "$f" --metric psnr-rgb || true  # curves may not overlap
done
