using BenchmarkDotNet.Running;
using LatentDiffusion.Benchmarks.Gpu;
using LatentDiffusion.Runtime;

// `gpu MODEL_DIR ...` is the console timing mode for the GPU machine; anything else goes to BenchmarkDotNet.
if (args.Length > 0 && args[0] == "gpu") return GpuBenchmark.Run(args[1..]);
TorchRuntime.EnsureInitialized();
BenchmarkSwitcher.FromAssembly(typeof(GpuBenchmark).Assembly).Run(args);
return 0;
