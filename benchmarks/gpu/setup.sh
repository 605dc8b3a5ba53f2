# Sourced by run.sh and run-sdxl.sh on the GPU machine, from the repository root: the output and work folders, the apps
# unpacked, libtorch from the Python torch, the memory-statistics shim built against it, and the GPU's name.
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

# cuda_parity NAME MODEL GUIDANCE EXPECTED LABEL: the tiny model through the ldm tool on CUDA (float32, seed 42, 8 steps,
# 128x128), then its PNG against the reference's pixels. Writes $OUT/NAME.png, NAME.log and parity-NAME.txt.
cuda_parity() {
  local name=$1 model=$2 guidance=$3 expected=$4 label=$5
  $W/apps/ldm/ldm generate --model "$model" --prompt "a photograph of an astronaut riding a horse" --steps 8 \
    --guidance "$guidance" --seed 42 --width 128 --height 128 --device cuda --output "$OUT/$name.png" --overwrite -v > "$OUT/$name.log" 2>&1
  grep -vE "^\s+at " "$OUT/$name.log" | tail -8
  python3 benchmarks/gpu/png_parity.py "$OUT/$name.png" "$expected" "$label" | tee "$OUT/parity-$name.txt"
}
