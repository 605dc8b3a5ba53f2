using BenchmarkDotNet.Attributes;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Runtime;
using static TorchSharp.torch;

namespace LatentDiffusion.Benchmarks;

/// <summary>UNet forward and VAE decode of the tiny SD 1.5-topology fixture model, float32 on the CPU.</summary>
[MemoryDiagnoser]
public class TinyModelBenchmarks
{
    private StableDiffusionPipeline _pipeline = null!;
    private Tensor _latents = null!, _timestep = null!, _context = null!, _single = null!;

    [GlobalSetup]
    public void Setup()
    {
        TorchRuntime.EnsureInitialized();
        _pipeline = StableDiffusionPipeline.LoadAsync(FixturePaths.Model("tiny-sd15")).GetAwaiter().GetResult();
        _latents = randn(2, 4, 16, 16);
        _single = randn(1, 4, 16, 16);
        _timestep = tensor(500f);
        _context = randn(2, 77, _pipeline.TextEncoder.HiddenSize);
    }

    /// <summary>One UNet evaluation at batch 2 (a guided step), 16x16 latents.</summary>
    [Benchmark]
    public void UNetForward()
    {
        using var _ = no_grad();
        using var output = _pipeline.UNet.Forward(_latents, _timestep, _context);
    }

    /// <summary>Decoding one 16x16 latent to a 128x128 image.</summary>
    [Benchmark]
    public void VaeDecode()
    {
        using var _ = no_grad();
        using var output = _pipeline.Vae.Decode(_single);
    }

    [GlobalCleanup]
    public void Cleanup() => _pipeline.Dispose();
}

/// <summary>A whole tiny text-to-image generation on the CPU: 128x128, 20 steps, guidance 7.5, the model's PNDM scheduler.</summary>
[MemoryDiagnoser]
public class TinyPipelineBenchmarks
{
    private StableDiffusionPipeline _pipeline = null!;

    [GlobalSetup]
    public void Setup()
    {
        TorchRuntime.EnsureInitialized();
        _pipeline = StableDiffusionPipeline.LoadAsync(FixturePaths.Model("tiny-sd15")).GetAwaiter().GetResult();
    }

    /// <summary>Prompt to pixels.</summary>
    [Benchmark]
    public void TextToImage()
    {
        using var result = _pipeline.Generate("a red circle on a blue background", new GenerationOptions { Steps = 20, Seed = 1 });
    }

    [GlobalCleanup]
    public void Cleanup() => _pipeline.Dispose();
}
