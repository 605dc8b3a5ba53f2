#!/usr/bin/env bash
# Packs what the GPU machine needs to train the built-in model into .gpu-train/ (ignored by git): a self-contained
# linux-x64 publish of TrainShapes without the CPU libtorch (it loads PyTorch's CUDA libtorch there). With a diffusers
# source tree in .gpu-train/diffusers-src.tar.xz (fetched, never committed) run.sh also loads the result in the reference.
set -euo pipefail
cd "$(dirname "$0")/../../.."
rm -rf .gpu-train/apps && mkdir -p .gpu-train/apps
dotnet publish tools/TrainShapes -c Release -r linux-x64 --self-contained -p:TorchBackend=none -p:DebugType=none \
  -p:InvariantGlobalization=true -o .gpu-train/apps/train
tar -cJf .gpu-train/apps.tar.xz -C .gpu-train apps
rm -rf .gpu-train/apps
du -sh .gpu-train/*
