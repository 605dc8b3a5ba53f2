using LatentDiffusion.Pipelines;
using Microsoft.Extensions.Logging;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary>float16 on the CPU is several times slower than float32: loading so says it, once, as a warning.</summary>
public class CpuHalfPrecisionTests
{
    [Test]
    public async Task LoadingInFloat16OnTheCpuLogsOneWarning()
    {
        var half = await LoadAndLog(ScalarType.Float16);
        var warnings = half.Where(l => l.Level == LogLevel.Warning && l.Message.Contains("float16")).ToList();
        Assert.That(warnings, Has.Count.EqualTo(1), string.Join("\n", half));
        Assert.That(warnings[0].Message, Does.Contain("use float32 on the CPU"));
        var single = await LoadAndLog(ScalarType.Float32);
        Assert.That(single.Where(l => l.Message.Contains("float16")), Is.Empty);
    }

    private static async Task<List<(LogLevel Level, string Message)>> LoadAndLog(ScalarType dtype)
    {
        var log = new ListLogger();
        using var factory = LoggerFactory.Create(b => b.AddProvider(log).SetMinimumLevel(LogLevel.Warning));
        await using var pipeline = await StableDiffusionPipeline.LoadAsync(Fixtures.PathOf("tiny-sd15"), new PipelineOptions { DType = dtype, LoggerFactory = factory });
        return log.Entries;
    }
}
