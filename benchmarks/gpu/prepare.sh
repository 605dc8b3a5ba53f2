#!/usr/bin/env bash
# Packs what the GPU machine needs into .gpu/ (ignored by git): self-contained linux-x64 publishes of the benchmark
# app and the ldm tool without the CPU libtorch (they load PyTorch's libtorch there), the reference scripts and the
# tokenizer from ../shared, and the tiny fixture model for a CUDA parity check.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .gpu/apps .gpu/shared && mkdir -p .gpu/apps .gpu/shared
common=(-c Release -r linux-x64 --self-contained -p:TorchBackend=none -p:DebugType=none -p:InvariantGlobalization=true)
dotnet publish benchmarks/LatentDiffusion.Benchmarks "${common[@]}" -o .gpu/apps/bench
dotnet publish src/LatentDiffusion.Cli "${common[@]}" -o .gpu/apps/ldm
# The two publishes share the runtime: hard-link identical files so tar stores them once.
(cd .gpu/apps && for f in $(cd ldm && find . -type f); do
   if [ -f "bench/$f" ] && cmp -s "bench/$f" "ldm/$f"; then ln -f "bench/$f" "ldm/$f"; fi
 done)
tar -cJf .gpu/apps.tar.xz -C .gpu apps
cp ../shared/gpu/*.py .gpu/shared/
cp -r ../shared/fixtures/tiny-sd15/tokenizer .gpu/shared/tokenizer
cp -r ../shared/fixtures/tiny-sd15 .gpu/shared/tiny-sd15
cp -r ../shared/fixtures/tiny-sdxl .gpu/shared/tiny-sdxl
python3 - <<'PY'
# the expected tiny txt2img image (reference, float32 CPU) for the CUDA parity check, as raw float32
import json, struct
f = open('../shared/fixtures/reference.safetensors', 'rb'); n = struct.unpack('<Q', f.read(8))[0]; h = json.loads(f.read(n))
e = h['sd15/txt2img/default/42/image']; f.seek(8 + n + e['data_offsets'][0])
open('.gpu/shared/expected-sd15-default-42.f32', 'wb').write(f.read(e['data_offsets'][1] - e['data_offsets'][0]))
# the same for tiny-sdxl (run-sdxl.sh)
f = open('../shared/fixtures/reference-phase2.safetensors', 'rb'); n = struct.unpack('<Q', f.read(8))[0]; h = json.loads(f.read(n))
e = h['sdxl/txt2img/euler/42/image']; f.seek(8 + n + e['data_offsets'][0])
open('.gpu/shared/expected-sdxl-euler-42.f32', 'wb').write(f.read(e['data_offsets'][1] - e['data_offsets'][0]))
PY
rm -rf .gpu/apps
du -sh .gpu/*
