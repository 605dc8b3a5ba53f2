using BenchmarkDotNet.Running;
using LatentDiffusion.Runtime;

TorchRuntime.EnsureInitialized();
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
