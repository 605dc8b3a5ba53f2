#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, after benchmarks/gpu/prepare.sh: tiny-sdxl's CUDA parity, then a
# full-size random-weight SDXL base
# (make_sdxl_random.py), then the reference StableDiffusionXLPipeline and this library on it in float16 at 1024², in one
# command: seconds per image and peak GPU memory (SDXL at 1024² should fit an 8 GB GPU). Needs diffusers importable by
# python3 (PYTHONPATH). Writes logs to $OUT.
set -uo pipefail
source benchmarks/gpu/setup.sh

echo "== CUDA parity on tiny-sdxl (float32) through the ldm tool"
cuda_parity tiny-sdxl-cuda .gpu/shared/tiny-sdxl 5 .gpu/shared/expected-sdxl-euler-42.f32 "tiny sdxl txt2img"

echo "== full-size SDXL base (random weights)"
python3 benchmarks/gpu/make_sdxl_random.py $W/sdxl --tokenizer .gpu/shared/tokenizer > "$OUT/make-sdxl.log" 2>&1 || { tail -20 "$OUT/make-sdxl.log"; exit 1; }
STEPS=${STEPS:-30}
timeout 300 python3 benchmarks/gpu/sdxl_baseline.py $W/sdxl --steps $STEPS --size 1024 --dtype float16 2>>"$OUT/ref.err" | grep RESULT | tee -a "$OUT/results.txt"
timeout 400 $W/apps/bench/LatentDiffusion.Benchmarks gpu $W/sdxl --steps $STEPS --batch 1 --dtype float16 --size 1024 --runs 2 2>&1 \
  | tee -a "$OUT/ours.log" | grep -E "RESULT|note" | tee -a "$OUT/results.txt"
echo "== summary"; cat "$OUT/results.txt"
