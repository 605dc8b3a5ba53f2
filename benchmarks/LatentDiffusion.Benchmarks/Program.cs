using BenchmarkDotNet.Running;
using LatentDiffusion.Benchmarks.Gpu;
using LatentDiffusion.Runtime;

// `gpu MODEL_DIR ...` is the console timing mode for the GPU machine, `shapes-eval MODEL_DIR` the built-in model's
// accuracy benchmark, `reference-compare MODEL_DIR REFERENCE_DIR` the check against the reference pipeline's images;
// `cpu MODEL ...` the console timing mode for the full-size model on the CPU; anything else goes to BenchmarkDotNet.
if (args.Length > 0 && args[0] == "gpu") return GpuBenchmark.Run(args[1..]);
if (args.Length > 0 && args[0] == "cpu") return LatentDiffusion.Benchmarks.Cpu.CpuBenchmark.Run(args[1..]);
if (args.Length > 0 && args[0] == "reference-compare") return LatentDiffusion.Benchmarks.ReferenceCompareMode.Run(args[1..]);
if (args.Length > 0 && args[0] == "shapes-eval") return LatentDiffusion.Benchmarks.ShapesEvaluationMode.Run(args[1..]);
TorchRuntime.EnsureInitialized();
BenchmarkSwitcher.FromAssembly(typeof(GpuBenchmark).Assembly).Run(args);
return 0;
