using BenchmarkDotNet.Attributes;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Runtime;
using static TorchSharp.torch;

namespace LatentDiffusion.Benchmarks.Cpu;

/// <summary>
/// The phases of a CPU generation, one benchmark each, in float32 and in the bfloat16 mode: loading the pipeline,
/// encoding a prompt pair, one guided UNet step, decoding one latent, and a whole 2-step text-to-image run. The model is
/// tiny-sd15 unless LATENTDIFFUSION_CPU_MODEL names another (LATENTDIFFUSION_CPU_CONFIG: its config folder for a single
/// file, LATENTDIFFUSION_CPU_SIZE: the image side, LATENTDIFFUSION_CPU_THREADS: libtorch's threads). The process's peak
/// RSS is printed at the end of each job. For the full-size model, where one run takes minutes, use the console mode
/// (<c>cpu MODEL</c>, see <see cref="CpuBenchmark"/>) instead.
/// </summary>
[MemoryDiagnoser]
public class CpuPipelineBenchmarks
{
    private StableDiffusionPipeline _pipeline = null!;
    private Tensor _ids = null!, _latents = null!, _single = null!, _timestep = null!, _context = null!;
    private GenerationOptions _generation = null!;

    /// <summary>The dtype the pipeline holds and runs its weights in.</summary>
    [Params(ScalarType.Float32, ScalarType.BFloat16)]
    public ScalarType DType { get; set; }

    private static string Model => Environment.GetEnvironmentVariable("LATENTDIFFUSION_CPU_MODEL") is { Length: > 0 } m ? m : FixturePaths.Model("tiny-sd15");

    private PipelineOptions Options => new()
    {
        DType = DType,
        ConfigDirectory = Environment.GetEnvironmentVariable("LATENTDIFFUSION_CPU_CONFIG") is { Length: > 0 } c ? c : null,
        Threads = int.TryParse(Environment.GetEnvironmentVariable("LATENTDIFFUSION_CPU_THREADS"), out int t) ? t : null,
    };

    [GlobalSetup]
    public void Setup()
    {
        TorchRuntime.EnsureInitialized();
        TorchRuntime.SetNnpackEnabled(false);
        _pipeline = StableDiffusionPipeline.LoadAsync(Model, Options).GetAwaiter().GetResult();
        int size = int.TryParse(Environment.GetEnvironmentVariable("LATENTDIFFUSION_CPU_SIZE"), out int s) ? s : _pipeline.DefaultImageSize;
        int side = size / _pipeline.Vae.ScaleFactor;
        var generator = new Generator(1);
        _ids = tensor(_pipeline.Tokenizer.EncodePadded("a photograph of an astronaut riding a horse", _pipeline.TextEncoder.MaxPositions).Ids.Select(i => (long)i).ToArray()).unsqueeze(0);
        _latents = randn(new long[] { 2, _pipeline.UNet.InChannels, side, side }, generator: generator).to(DType);
        _single = randn(new long[] { 1, _pipeline.UNet.InChannels, side, side }, generator: generator).to(_pipeline.Vae.DType);
        _timestep = tensor(500f);
        _context = randn(new long[] { 2, 77, _pipeline.TextEncoder.HiddenSize }, generator: generator).to(DType);
        _generation = new GenerationOptions { Steps = 2, Width = size, Height = size, GuidanceScale = 7.5, Scheduler = "euler", Seed = 1 };
    }

    /// <summary>Loading the pipeline from disk (the file in the page cache after the first run).</summary>
    [Benchmark]
    public void Load() => StableDiffusionPipeline.LoadAsync(Model, Options).GetAwaiter().GetResult().Dispose();

    /// <summary>Encoding one prompt (the pipeline encodes two when guiding).</summary>
    [Benchmark]
    public void TextEncoding()
    {
        using var _ = no_grad();
        using var output = _pipeline.TextEncoder.Encode(_ids);
    }

    /// <summary>One guided UNet step: batch 2 (unconditional and conditional).</summary>
    [Benchmark]
    public void UNetStep()
    {
        using var _ = no_grad();
        using var output = _pipeline.UNet.Forward(_latents, _timestep, _context);
    }

    /// <summary>Decoding one latent to an image.</summary>
    [Benchmark]
    public void VaeDecode()
    {
        using var _ = no_grad();
        using var output = _pipeline.Vae.Decode(_single);
    }

    /// <summary>Prompt to pixels: 2 Euler steps at guidance 7.5.</summary>
    [Benchmark]
    public void TextToImage2Steps()
    {
        using var result = _pipeline.Generate("a photograph of an astronaut riding a horse", _generation);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _pipeline.Dispose();
        foreach (var t in new[] { _ids, _latents, _single, _timestep, _context }) t.Dispose();
        Console.WriteLine($"// peak RSS of this job's process ({DType}): {PeakMemory.PeakResidentBytes / 1e9:F2} GB");
    }
}
