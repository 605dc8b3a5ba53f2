#!/usr/bin/env bash
# Packs LatentDiffusion and LatentDiffusion.Training with the given version, then, as a user would:
# 1. checks the training package for what a restore needs: both target frameworks, its readme, and a dependency on
#    LatentDiffusion of the same version;
# 2. builds and runs samples/PackageConsumer against the LatentDiffusion package (restored from artifacts/packages, as
#    a user's `dotnet add package` would), making an image with the fixture model;
# 3. follows docs/getting-started.md "Install from a local folder" command for command in a new console app whose
#    Program.cs is the README's C# block, verbatim, and checks that it drew its picture with the built-in model.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
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
trap 'rm -rf "$out"' EXIT
dotnet run --project samples/PackageConsumer -c Release -p:LatentDiffusionVersion="$version" -- ../shared/fixtures/tiny-sd15 "$out/sample.png"
test -s "$out/sample.png"

echo "== the README's C# block in a new console app (docs/getting-started.md, install from a local folder)"
cd "$out"
dotnet new console -o MyApp
cd MyApp
dotnet add package LatentDiffusion --version "$version" --source "$root/artifacts/packages"
dotnet add package TorchSharp-cpu --version 0.107.0
awk '/^```csharp/{if(!done){p=1;next}} /^```/{if(p){p=0;done=1}} p' "$root/README.md" > Program.cs
test -s Program.cs
dotnet run
test -s circle.png
echo "README block drew circle.png ($(stat -c %s circle.png) bytes)"
