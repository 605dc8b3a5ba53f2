#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, after benchmarks/gpu/prepare.sh: tiny-sdxl's CUDA parity, then a
# full-size random-weight SDXL base
# (make_sdxl_random.py), then the reference StableDiffusionXLPipeline and this library on it in float16 at 1024², in one
# command: seconds per image and peak GPU memory (SDXL at 1024² should fit an 8 GB GPU). Needs diffusers importable by
# python3 (PYTHONPATH). Writes logs to $OUT.
set -uo pipefail
OUT=${OUT:-${TMPDIR:-/tmp}/ldm-out}; mkdir -p "$OUT"
W=${TMPDIR:-/tmp}/ldm; mkdir -p "$W"
TL=$(python3 -c "import torch,os;print(os.path.join(os.path.dirname(torch.__file__),'lib'))")
TI=$(python3 -c "import torch,os;print(os.path.join(os.path.dirname(torch.__file__),'include'))")
tar -xJf .gpu/apps.tar.xz -C $W
export LATENTDIFFUSION_LIBTORCH=$TL DOTNET_gcServer=0
if g++ -O2 -shared -fPIC -std=c++17 benchmarks/gpu/memstats.cpp -I"$TI" -I"$TI/torch/csrc/api/include" -I/usr/local/cuda/include \
     -L"$TL" -lc10_cuda -lc10 -Wl,-rpath,"$TL" -o $W/libldmemstats.so 2>"$OUT/memstats-build.log"; then
  export LATENTDIFFUSION_MEMSTATS=$W/libldmemstats.so
else echo "memstats shim did not build (see memstats-build.log)"; fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

echo "== CUDA parity on tiny-sdxl (float32) through the ldm tool"
$W/apps/ldm/ldm generate --model .gpu/shared/tiny-sdxl --prompt "a photograph of an astronaut riding a horse" --steps 8 \
  --guidance 5 --seed 42 --width 128 --height 128 --device cuda --output "$OUT/tiny-sdxl-cuda.png" --overwrite -v > "$OUT/tiny-sdxl-cuda.log" 2>&1
grep -vE "^\s+at " "$OUT/tiny-sdxl-cuda.log" | tail -8
python3 - "$OUT/tiny-sdxl-cuda.png" .gpu/shared/expected-sdxl-euler-42.f32 <<'PY' | tee "$OUT/parity-sdxl.txt"
import sys, numpy as np
from PIL import Image
a = np.asarray(Image.open(sys.argv[1]).convert('RGB')).astype(np.float32) / 255
e = np.fromfile(sys.argv[2], dtype=np.float32).reshape(a.shape)
print(f"tiny sdxl txt2img on CUDA float32 vs reference CPU: max abs {np.abs(a - e).max():.5f} (PNG rounding allows 1/255 = 0.00392 + 2e-3)")
PY

echo "== full-size SDXL base (random weights)"
python3 benchmarks/gpu/make_sdxl_random.py $W/sdxl --tokenizer .gpu/shared/tokenizer > "$OUT/make-sdxl.log" 2>&1 || { tail -20 "$OUT/make-sdxl.log"; exit 1; }
STEPS=${STEPS:-30}
timeout 300 python3 benchmarks/gpu/sdxl_baseline.py $W/sdxl --steps $STEPS --size 1024 --dtype float16 2>>"$OUT/ref.err" | grep RESULT | tee -a "$OUT/results.txt"
timeout 400 $W/apps/bench/LatentDiffusion.Benchmarks gpu $W/sdxl --steps $STEPS --batch 1 --dtype float16 --size 1024 --runs 2 2>&1 \
  | tee -a "$OUT/ours.log" | grep -E "RESULT|note" | tee -a "$OUT/results.txt"
echo "== summary"; cat "$OUT/results.txt"
