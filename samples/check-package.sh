#!/usr/bin/env bash
# Packs LatentDiffusion and LatentDiffusion.Training with the given version, then, as a user would:
# 1. checks the training package for what a restore needs: both target frameworks, its readme, and a dependency on
#    LatentDiffusion of the same version;
# 2. builds and runs samples/PackageConsumer against the LatentDiffusion package (restored from artifacts/packages, as
#    a user's `dotnet add package` would), making an image with the fixture model;
# 3. follows docs/getting-started.md "Install from a local folder" command for command in a new console app whose
#    Program.cs is the README's C# block, verbatim, and checks that it drew its picture with the built-in model;
# 4. packs the ldm tool (RID-specific packages), checks that every package is under the public gallery's 250 MB limit
#    and carries one platform's libtorch, installs it from that folder as docs/getting-started.md says, and runs
#    `ldm --help` and a two-step generation with the built-in model.
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

echo "== the ldm tool: pack, install from the folder, run (docs/getting-started.md, the ldm tool)"
cd "$root"
dotnet pack src/LatentDiffusion.Cli -c Release -o artifacts/packages -p:Version="$version"
python3 - artifacts/packages "$version" <<'PY'
import os, sys, zipfile
folder, version = sys.argv[1], sys.argv[2]
limit = 250 * 1000 * 1000  # the public gallery refuses larger packages
rids = ["linux-x64", "win-x64", "osx-arm64"]
problems = []
pointer = os.path.join(folder, f"LatentDiffusion.Cli.{version}.nupkg")
if not os.path.exists(pointer):
    sys.exit(f"{pointer} was not packed")
for rid in [None] + rids:
    name = f"LatentDiffusion.Cli.{rid + '.' if rid else ''}{version}.nupkg"
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        problems.append(f"{name} was not packed"); continue
    size = os.path.getsize(path)
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        unpacked = sum(i.file_size for i in z.infolist())
    print(f"{name}: {size / 1e6:.1f} MB packed, {unpacked / 1e6:.1f} MB unpacked")
    if size >= limit:
        problems.append(f"{name} is {size / 1e6:.1f} MB, over the 250 MB limit")
    libtorch = [n for n in names if os.path.basename(n).split(".")[0] in ("libtorch_cpu", "torch_cpu")]
    if rid is None:
        if libtorch or any(n.endswith(".dll") for n in names):
            problems.append(f"{name} (the package that points at the platform packages) carries the tool itself")
    else:
        if len(libtorch) != 1 or not libtorch[0].startswith(f"tools/net10.0/{rid}/"):
            problems.append(f"{name} carries libtorch {libtorch}, expected one for {rid}")
        if any("/runtimes/" in n for n in names):
            problems.append(f"{name} carries other platforms' native runtimes")
        if not any(n.endswith("models/shapes/model_index.json") for n in names):
            problems.append(f"{name} lacks the built-in model")
if problems:
    sys.exit("\n".join(problems))
PY
tool="$out/tool"
dotnet tool install --tool-path "$tool" --add-source "$root/artifacts/packages" --version "$version" LatentDiffusion.Cli
echo "installed tool: $(du -sm "$tool" | cut -f1) MB in $tool"
help=$("$tool/ldm" --help)
grep -q "generate" <<<"$help" || { echo "ldm --help does not list generate: $help"; exit 1; }
"$tool/ldm" generate --prompt "a red circle on a blue background" --steps 2 --seed 1 --output "$out/tool.png"
test -s "$out/tool.png"
echo "the installed ldm drew tool.png ($(stat -c %s "$out/tool.png") bytes)"
