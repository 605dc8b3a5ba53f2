#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, after benchmarks/gpu/prepare.sh: times the reference diffusers
# pipeline and this library on the same full-size SD 1.5 random-weight model, in one command, and checks CUDA parity
# on the tiny model. Needs diffusers importable by python3 (PYTHONPATH). Writes logs and images to $OUT.
set -uo pipefail
source benchmarks/gpu/setup.sh

echo "== CUDA parity on the tiny model (float32) and the ldm tool"
cuda_parity tiny-cuda .gpu/shared/tiny-sd15 7.5 .gpu/shared/expected-sd15-default-42.f32 "tiny sd15 txt2img"

echo "== full-size SD 1.5 (random weights)"
python3 .gpu/shared/make_sd15_random.py $W/sd15 --tokenizer .gpu/shared/tokenizer > "$OUT/make-model.log" 2>&1 || { cat "$OUT/make-model.log"; exit 1; }
$W/apps/ldm/ldm generate --model $W/sd15 --prompt "a cat" --steps 20 --device cuda --dtype float16 --seed 1 --output "$OUT/sd15-fp16.png" --overwrite 2>&1 | tail -2

run_ref() { timeout 120 python3 .gpu/shared/diffusers_baseline.py $W/sd15 "$@" 2>>"$OUT/ref.err" | grep RESULT | tee -a "$OUT/results.txt"; }
run_ours() { timeout 300 $W/apps/bench/LatentDiffusion.Benchmarks gpu $W/sd15 "$@" 2>&1 | tee -a "$OUT/ours.log" | grep -E "RESULT|note|GCs" | tee -a "$OUT/results.txt"; }
echo "== headline: float16 512px 50 steps batch 1"
run_ref --steps 50 --dtype float16 --batch 1
run_ours --steps 50 --batch 1 --dtype float16
run_ours --steps 50 --batch 4 --dtype float16
run_ref --steps 50 --dtype float16 --batch 4
if [ "${MODE:-full}" = headline ]; then echo "== summary"; cat "$OUT/results.txt"; exit 0; fi
echo "== the rest"
run_ours --steps 20,50 --batch 1,4 --dtype float16,bfloat16 --runs 3
run_ref --steps 20 --dtype float16 --batch 1
run_ref --steps 50 --dtype bfloat16 --batch 1
echo "== summary"; cat "$OUT/results.txt"
