#!/usr/bin/env bash
# Packs LatentDiffusion with the given version, then builds and runs samples/PackageConsumer against that package
# (restored from artifacts/packages, as a user's `dotnet add package` would), making an image with the fixture model.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-0.1.0-local.$(date +%s)}
rm -rf artifacts/packages
dotnet pack src/LatentDiffusion -c Release -o artifacts/packages -p:Version="$version"
ls artifacts/packages
out=$(mktemp -d)
dotnet run --project samples/PackageConsumer -c Release -p:LatentDiffusionVersion="$version" -- ../shared/fixtures/tiny-sd15 "$out/sample.png"
test -s "$out/sample.png"
rm -rf "$out"
