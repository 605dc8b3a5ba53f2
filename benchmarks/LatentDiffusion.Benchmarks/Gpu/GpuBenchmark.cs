using System.Diagnostics;
using System.Globalization;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Benchmarks.Gpu;

/// <summary>
/// The console GPU timing mode (BenchmarkDotNet's process per job is too heavy there): seconds per run, UNet iterations
/// per second and peak GPU memory for each dtype x steps x batch, printed in the same form as the reference's
/// diffusers_baseline.py so that both can be read side by side.
/// usage: gpu MODEL_DIR [--steps 20,50] [--batch 1,4] [--dtype float16,bfloat16] [--size 512] [--runs 3]
/// </summary>
internal static class GpuBenchmark
{
    public static int Run(string[] args)
    {
        if (args.Length < 1) { Console.Error.WriteLine("usage: gpu MODEL_DIR [--steps 20,50] [--batch 1,4] [--dtype float16,bfloat16] [--size 512] [--runs 3] [--device cuda]"); return 2; }
        string model = args[0];
        string Get(string name, string fallback) { int i = Array.IndexOf(args, name); return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback; }
        var steps = Get("--steps", "20,50").Split(',').Select(int.Parse).ToArray();
        var batches = Get("--batch", "1,4").Split(',').Select(int.Parse).ToArray();
        var dtypes = Get("--dtype", "float16,bfloat16").Split(',');
        int size = int.Parse(Get("--size", "512"), CultureInfo.InvariantCulture);
        int runs = int.Parse(Get("--runs", "3"), CultureInfo.InvariantCulture);
        string deviceName = Get("--device", "cuda");

        TorchRuntime.EnsureInitialized();
        var memory = CudaMemoryStats.TryLoad();
        if (memory is null) Console.WriteLine("note: LATENTDIFFUSION_MEMSTATS not set or not loadable; peak memory not measured");
        foreach (var dtypeName in dtypes)
        {
            var dtype = DeviceSpec.ParseDType(dtypeName);
            var load = Stopwatch.StartNew();
            using var pipeline = StableDiffusionPipeline.LoadAsync(model, new PipelineOptions { Device = deviceName, DType = dtype }).GetAwaiter().GetResult();
            Console.WriteLine($"loaded {model} as {dtypeName} on {deviceName} in {load.Elapsed.TotalSeconds:F1} s");
            foreach (int batch in batches)
            foreach (int n in steps)
            {
                var options = new GenerationOptions { Steps = n, Width = size, Height = size, GuidanceScale = 7.5, Seed = 0, ImagesPerPrompt = batch };
                double Once()
                {
                    if (deviceName.StartsWith("cuda")) cuda.synchronize();
                    var t = Stopwatch.StartNew();
                    using var r = pipeline.Generate("a photograph of an astronaut riding a horse", options);
                    if (deviceName.StartsWith("cuda")) cuda.synchronize();
                    return t.Elapsed.TotalSeconds;
                }
                Once();
                memory?.ResetPeak(0);
                int gc0 = GC.CollectionCount(0), gc2 = GC.CollectionCount(2);
                var times = Enumerable.Range(0, runs).Select(_ => Once()).OrderBy(t => t).ToArray();
                double median = times[times.Length / 2];
                string peak = memory is null ? "n/a" : $"{memory.PeakBytes(0) / (double)(1L << 30):F2} GiB";
                Console.WriteLine(FormattableString.Invariant(
                    $"RESULT latentdiffusion {dtypeName} {size}px steps={n} batch={batch}: {median:F3} s/run (min {times[0]:F3} max {times[^1]:F3}), {n / median:F2} it/s, peak {peak}"));
                Console.WriteLine($"  .NET GCs during the timed runs: gen0 {GC.CollectionCount(0) - gc0}, gen2 {GC.CollectionCount(2) - gc2}");
            }
        }
        return 0;
    }
}
