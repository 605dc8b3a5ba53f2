using System.Diagnostics;
using System.Globalization;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Runtime;

namespace LatentDiffusion.Benchmarks.Cpu;

/// <summary>
/// The console CPU timing mode for the full-size model, where one generation takes minutes (BenchmarkDotNet would run
/// it dozens of times): loads once, generates <c>--runs</c> times, and prints each phase's seconds (load, text encoding,
/// denoising and its seconds per step, decoding, total) and the process's peak RSS, after loading and at the end. One
/// configuration per process, so that the peak RSS is that configuration's own.
/// usage: cpu MODEL [--config DIR] [--size 512] [--steps 2] [--dtype float32] [--threads N] [--runs 1] [--scheduler euler] [--guidance 7.5]
/// </summary>
internal static class CpuBenchmark
{
    public const string Usage = "usage: cpu MODEL [--config DIR] [--size 512] [--steps 2] [--dtype float32|bfloat16] [--threads N] [--runs 1] [--scheduler euler] [--guidance 7.5]";

    public static int Run(string[] args)
    {
        if (args.Length < 1 || args[0].StartsWith('-')) { Console.Error.WriteLine(Usage); return 2; }
        string model = args[0];
        string? Get(string name) { int i = Array.IndexOf(args, name); return i >= 0 && i + 1 < args.Length ? args[i + 1] : null; }
        int size = int.Parse(Get("--size") ?? "512", CultureInfo.InvariantCulture);
        int steps = int.Parse(Get("--steps") ?? "2", CultureInfo.InvariantCulture);
        int runs = int.Parse(Get("--runs") ?? "1", CultureInfo.InvariantCulture);
        double guidance = double.Parse(Get("--guidance") ?? "7.5", CultureInfo.InvariantCulture);
        string dtypeName = Get("--dtype") ?? "float32";
        int? threads = Get("--threads") is { } t ? int.Parse(t, CultureInfo.InvariantCulture) : null;

        TorchRuntime.EnsureInitialized();
        TorchRuntime.SetNnpackEnabled(false);
        var options = new PipelineOptions { DType = DeviceSpec.ParseDType(dtypeName), ConfigDirectory = Get("--config"), Threads = threads };
        var clock = Stopwatch.StartNew();
        using var pipeline = StableDiffusionPipeline.LoadAsync(model, options).GetAwaiter().GetResult();
        double load = clock.Elapsed.TotalSeconds;
        Console.WriteLine(Invariant($"model {model}, {dtypeName}, {size}x{size}, {steps} steps, guidance {guidance}, {TorchThreads.Current} threads"));
        Console.WriteLine(Invariant($"load {load:F1} s, peak RSS after loading {Gb(PeakMemory.PeakResidentBytes)} GB"));
        var generation = new GenerationOptions { Steps = steps, Width = size, Height = size, GuidanceScale = guidance, Scheduler = Get("--scheduler") ?? "euler", Seed = 1 };
        Console.WriteLine("| run | text encoding s | denoising s | s per step | decoding s | total s | peak RSS GB |");
        Console.WriteLine("|---|---|---|---|---|---|---|");
        for (int run = 1; run <= runs; run++)
        {
            using var result = pipeline.Generate("a photograph of an astronaut riding a horse", generation);
            var p = result.Timings!;
            Console.WriteLine(Invariant($"| {run} | {p.TextEncoding.TotalSeconds:F2} | {p.Denoising.TotalSeconds:F2} | {p.Denoising.TotalSeconds / Math.Max(1, p.DenoiserCalls):F2} | {p.Decoding.TotalSeconds:F2} | {p.Total.TotalSeconds:F2} | {Gb(PeakMemory.PeakResidentBytes)} |"));
        }
        Console.WriteLine(Invariant($"fixed cost of run 1 (load + text encoding + decoding) and peak RSS are the numbers docs/performance.md compares; whole process {clock.Elapsed.TotalSeconds:F1} s"));
        return 0;
    }

    private static string Gb(long bytes) => (bytes / 1e9).ToString("F2", CultureInfo.InvariantCulture);

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
