#!/usr/bin/env bash
# Runs on the GPU machine from the repository root after tools/TrainShapes/gpu/prepare.sh: trains the built-in shapes
# model on CUDA within LIMIT seconds, then loads the result in the reference Python pipeline (when the diffusers source
# travelled) and, when .gpu-train/ddim exists, traces the reference on one fixture case. Results come back as a few
# files under $OUT (the device tool returns at most 8): train.log, unet.tar (the UNet folder), rest.tar (the other
# components, losses, training.json, reference images and trace).
set -uo pipefail
OUT=${OUT:-${TMPDIR:-/tmp}/ldm-out}; mkdir -p "$OUT"
W=${TMPDIR:-/tmp}/ldm-train; rm -rf "$W"; mkdir -p "$W/res"
TL=$(python3 -c "import torch,os;print(os.path.join(os.path.dirname(torch.__file__),'lib'))" 2>/dev/null)
[ -n "$TL" ] && export LATENTDIFFUSION_LIBTORCH=$TL
export DOTNET_gcServer=0 PYTHONUNBUFFERED=1
tar -xJf .gpu-train/apps.tar.xz -C "$W"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
if [ -f .gpu-train/diffusers-src.tar.xz ]; then
  mkdir -p "$W/py" && tar -xJf .gpu-train/diffusers-src.tar.xz -C "$W/py" && export PYTHONPATH=$W/py
fi
if [ -d .gpu-train/ddim ] && [ -n "${PYTHONPATH:-}" ]; then   # in parallel with training, on a few CPU threads
  tar -xJf .gpu-train/ddim/tiny-sd15.tar.xz -C "$W"
  (OMP_NUM_THREADS=4 timeout 200 python3 benchmarks/gpu/ddim_trace.py "$W/tiny-sd15" .gpu-train/ddim/case.json \
     .gpu-train/ddim/expected.f32 "$W/res/ddim-trace.npz" > "$OUT/ddim.log" 2>&1) &
fi
${APP:-$W/apps/train/TrainShapes} --device "${DEVICE:-cuda}" --output "$W/res/shapes" --work "$W/state" --threads 8 --eval 0 \
  --time-limit "${LIMIT:-450}" ${TRAIN_ARGS:-} > "$OUT/train.log" 2>&1
echo "TrainShapes exit $?"; grep -vE "^\s+at " "$OUT/train.log" | grep -vE "^\[.*\] (vae|unet) [0-9]+/" | tail -25
grep -E "unet [0-9]+/" "$OUT/train.log" | awk 'NR % 10 == 0' | tail -12
cp "$W"/state/*.csv "$W"/state/training.json "$W/res/" 2>/dev/null
if [ -n "${PYTHONPATH:-}" ] && [ -f "$W/res/shapes/model_index.json" ]; then
  OMP_NUM_THREADS=8 timeout 120 python3 tools/TrainShapes/gpu/reference_check.py "$W/res/shapes" "$W/res" > "$OUT/reference.log" 2>&1
  tail -5 "$OUT/reference.log"
fi
wait; cat "$OUT/ddim.log" 2>/dev/null | tail -3
tar -cf "$OUT/unet.tar" -C "$W/res/shapes" unet 2>/dev/null && rm -rf "$W/res/shapes/unet"
tar -cf "$OUT/rest.tar" -C "$W/res" . && ls -la "$OUT"
