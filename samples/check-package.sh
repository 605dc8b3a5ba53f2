#!/usr/bin/env bash
# Packs LatentDiffusion and LatentDiffusion.Training with the given version, then builds and runs
# samples/PackageConsumer against the LatentDiffusion package (restored from artifacts/packages, as a user's
# `dotnet add package` would), making an image with the fixture model. The training package is checked for what a
# restore needs: both target frameworks, its readme, and a dependency on LatentDiffusion of the same version.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-0.1.0-local.$(date +%s)}
rm -rf artifacts/packages
dotnet pack src/LatentDiffusion -c Release -o artifacts/packages -p:Version="$version"
dotnet pack src/LatentDiffusion.Training -c Release -o artifacts/packages -p:Version="$version"
ls artifacts/packages
python3 - "artifacts/packages/LatentDiffusion.Training.$version.nupkg" "$version" <<'PY'
import re, sys, zipfile
package, version = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(package) as z:
    names = set(z.namelist())
    nuspec = z.read("LatentDiffusion.Training.nuspec").decode("utf-8")
missing = [n for n in ("lib/net8.0/LatentDiffusion.Training.dll", "lib/net10.0/LatentDiffusion.Training.dll", "README.md") if n not in names]
deps = re.findall(r'<dependency id="LatentDiffusion" version="([^"]+)"', nuspec)
if missing or not deps or any(d.strip("[]") != version for d in deps):
    sys.exit(f"{package}: missing {missing}, LatentDiffusion dependency versions {deps} (expected {version})")
if "LatentDiffusion.Shapes" in nuspec or any("Shapes" in n for n in names):
    sys.exit(f"{package}: carries the shapes tool library")
print(f"{package}: ok ({len(deps)} target frameworks depend on LatentDiffusion {version})")
PY
out=$(mktemp -d)
dotnet run --project samples/PackageConsumer -c Release -p:LatentDiffusionVersion="$version" -- ../shared/fixtures/tiny-sd15 "$out/sample.png"
test -s "$out/sample.png"
rm -rf "$out"
