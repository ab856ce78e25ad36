#!/usr/bin/env bash
# Train the default models (codlite-small-0.0312 and -0.125) with the small recipe v2, in one
# command and a wall-clock budget; made for one GPU (both rates train at once on it), runs
# anywhere. Writes OUT/codlite-small-RATE.safetensors (fp16, config inside) and OUT/train.log.
#
#   bash benchmarks/train_default.sh [MINUTES] [OUT]        (defaults: 9, runs/default)
#
# Environment:
#   DATA=DIR     training photos (default ../shared/data/train; never Kodak)
#   INIT=DIR     warm start from DIR/codlite-small-RATE.safetensors (shape-matching tensors)
#   RATES="0.0312 0.125"
#   DEVICE=auto|gpu|cpu  (auto: GPU settings when torch sees CUDA, else the CPU ones)
#   SMOKE_STEPS=N  cap every phase at N steps (the CPU test of this script)
# Phases per rate (docs/training.md, "the small recipe v2"):
#   1. codlite-small-recon  L1 + (1 - MS-SSIM) + chroma + VQ at constant lr, ~55 % of the budget
#   2. codlite-small-gan    + hinge PatchGAN term, lr decayed to 0; its step count comes from
#                           phase 1's measured speed (x0.7 for the discriminator), ~35 %
# It installs nothing and runs from a checkout as it is (PYTHONPATH, `python -m cod`): it needs
# torch, lightning, torchmetrics, safetensors, pyyaml, pillow (the GPU machines' image has them).
# On a lent GPU machine the photos must travel with the tree (64 MiB in all): make a small copy
# with `python tools/pack_train_data.py ../shared/data/train .gpu/train` (~20 MiB), move
# cod/weights/*.safetensors aside for the call unless INIT needs them, and run
# `DATA=.gpu/train bash benchmarks/train_default.sh 9 $OUT/default` (docs/training.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
MINUTES=${1:-9}
OUT=${2:-runs/default}
DATA=${DATA:-../shared/data/train}
RATES=${RATES:-"0.0312 0.125"}
DEVICE=${DEVICE:-auto}
[ -d "$DATA" ] || { echo "error: training data folder $DATA not found (set DATA=DIR)" >&2; exit 2; }
mkdir -p "$OUT"
LOG="$OUT/train.log"
if [ "$DEVICE" = auto ]; then
  DEVICE=$(python -c "import torch; print('gpu' if torch.cuda.is_available() else 'cpu')")
fi
n_rates=$(echo $RATES | wc -w)
if [ "$DEVICE" = gpu ]; then
  workers=$(( $(nproc) / n_rates - 1 )); [ $workers -lt 1 ] && workers=1; [ $workers -gt 6 ] && workers=6
  DEV=(--set trainer.accelerator=gpu --set data.size=256 --set data.batch_size=16 --set data.global_batch=16 --set data.workers=$workers)
else
  DEV=(--set trainer.accelerator=cpu)
fi
total=$(( MINUTES * 60 - 60 ))   # ~1 min for start-up, export and shipping
t1=$(( total * 55 / 100 )); t2=$(( total * 35 / 100 ))
hms() { printf "00:%02d:%02d:%02d" $(( $1 / 3600 )) $(( $1 % 3600 / 60 )) $(( $1 % 60 )); }
smoke=(); [ -n "${SMOKE_STEPS:-}" ] && smoke=(--set trainer.max_steps=$SMOKE_STEPS --set trainer.checkpoint_every=$SMOKE_STEPS --set trainer.log_every=1)
{
echo "train_default: $(date -u +%FT%TZ) budget ${MINUTES} min on $DEVICE ($(python -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU")')); rates $RATES; data $DATA; phase 1 ${t1}s, phase 2 ~${t2}s"
} | tee "$LOG"

train_rate() {
  local R=$1 dir="$OUT/$1"
  local init=()
  [ -n "${INIT:-}" ] && init=(--set init_from="$INIT/codlite-small-$R.safetensors")
  [ "$DEVICE" = cpu ] && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  python -m cod train codlite-small-recon -o "$dir/recon" --set model.name=codlite-small-$R --set model.save_name=codlite-small-$R-recon \
    --set "data.sources=[$DATA]" --set trainer.max_time=$(hms $t1) "${init[@]}" "${DEV[@]}" "${smoke[@]}"
  local sps steps
  sps=$(python -c "import json; print(json.load(open('$dir/recon/train_summary.json'))['steps_per_second'] or 0)")
  steps=$(python -c "print(max(50, int($sps * 0.7 * $t2)))")
  [ -n "${SMOKE_STEPS:-}" ] && steps=$SMOKE_STEPS
  echo "rate $R: phase 1 ran at $sps steps/s; phase 2 gets $steps steps"
  python -m cod train codlite-small-gan -o "$dir/gan" --set model.name=codlite-small-$R --set model.save_name=codlite-small-$R \
    --set init_from="$dir/recon/model.safetensors" --set "data.sources=[$DATA]" --set trainer.max_steps=$steps \
    --set optim.decay_steps=$steps --set adversarial.start=$(( steps / 10 )) --set trainer.max_time=$(hms $(( t2 + 60 ))) "${DEV[@]}" "${smoke[@]}"
  python tools/ship_weights.py "$dir/gan/model.safetensors" --name codlite-small-$R --dtype float16 --out "$OUT/codlite-small-$R.safetensors"
}

pids=()
for R in $RATES; do
  train_rate "$R" > "$OUT/train-$R.log" 2>&1 &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
for R in $RATES; do grep -E "^(rate|trained|exported|training data)|->" "$OUT/train-$R.log" | sed "s/^/[$R] /" | tee -a "$LOG"; done
if [ $status -ne 0 ]; then echo "error: a rate failed; see $OUT/train-RATE.log" | tee -a "$LOG" >&2; exit 1; fi
echo "train_default: done $(date -u +%FT%TZ); weights in $OUT" | tee -a "$LOG"
