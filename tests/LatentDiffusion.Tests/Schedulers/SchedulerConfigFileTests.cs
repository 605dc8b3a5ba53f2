using LatentDiffusion.Formats;
using LatentDiffusion.Loading;
using LatentDiffusion.Pipelines;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>
/// Config files as the reference writes them: Python's json.dumps emits bare <c>NaN</c>, <c>Infinity</c> and
/// <c>-Infinity</c> (DPM-Solver's <c>"lambda_min_clipped": -Infinity</c>). One reader serves models and schedulers.
/// </summary>
[TestFixture]
public sealed class SchedulerConfigFileTests
{
    private const string DpmSolverConfig = """
        {
          "_class_name": "DPMSolverMultistepScheduler",
          "_diffusers_version": "0.40.0.dev0",
          "algorithm_type": "dpmsolver++",
          "beta_end": 0.012,
          "beta_schedule": "scaled_linear",
          "beta_start": 0.00085,
          "euler_at_final": false,
          "final_sigmas_type": "zero",
          "lambda_min_clipped": -Infinity,
          "lower_order_final": true,
          "num_train_timesteps": 1000,
          "prediction_type": "epsilon",
          "sample_max_value": 1.0,
          "solver_order": 2,
          "solver_type": "midpoint",
          "steps_offset": 1,
          "timestep_spacing": "leading",
          "trained_betas": null,
          "use_karras_sigmas": true,
          "variance_type": null,
          "some_future_key": NaN,
          "another_future_key": Infinity,
          "a_note": "NaN and -Infinity in a \"string\" stay text"
        }
        """;

    /// <summary>A whole model folder whose scheduler_config.json holds -Infinity, NaN and Infinity loads, and the value is −∞.</summary>
    [Test]
    public async Task AModelFolderWithPythonNonFiniteNumbersLoads()
    {
        string dir = Directory.CreateTempSubdirectory("ldm-nonfinite-").FullName;
        try
        {
            CopyDirectory(Fixtures.PathOf("tiny-sd15"), dir);
            File.WriteAllText(Path.Combine(dir, "scheduler", "scheduler_config.json"), DpmSolverConfig);
            using var pipeline = await StableDiffusionPipeline.LoadAsync(dir);
            Assert.That(pipeline.Scheduler.ClassName, Is.EqualTo("DPMSolverMultistepScheduler"));
            Assert.That(pipeline.Scheduler.Config.Double("lambda_min_clipped", 0), Is.EqualTo(double.NegativeInfinity));
            Assert.That(pipeline.Scheduler.Config.Bool("use_karras_sigmas", false), Is.True);
            using var result = await pipeline.GenerateAsync("a cat", new GenerationOptions { Steps = 2, Seed = 1, Width = 64, Height = 64 });
            Assert.That(result.Images, Has.Count.EqualTo(1));
            // ldm info reads the same file through the same reader.
            var info = ModelInfo.Describe(dir);
            Assert.That(info, Is.Not.Null);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void TheConfigReaderAcceptsWhatPythonWritesAndLeavesStringsAlone()
    {
        var config = JsonConfig.Parse(DpmSolverConfig, "test");
        Assert.That(config.Double("lambda_min_clipped", 0), Is.EqualTo(double.NegativeInfinity));
        Assert.That(config.Double("some_future_key", 0), Is.NaN);
        Assert.That(config.Double("another_future_key", 0), Is.EqualTo(double.PositiveInfinity));
        Assert.That(config.String("a_note", null), Is.EqualTo("NaN and -Infinity in a \"string\" stay text"));
        var arrays = JsonConfig.Parse("""{"values": [1.5, NaN, -Infinity, Infinity], "trailing": 1,}""", "arrays");
        Assert.That(arrays.DoubleArray("values"), Is.EqualTo(new[] { 1.5, double.NaN, double.NegativeInfinity, double.PositiveInfinity }));
        // The scheduler reader is the same reader.
        Assert.That(LatentDiffusion.Schedulers.SchedulerConfig.Parse(DpmSolverConfig, "test").Double("lambda_min_clipped", 0), Is.EqualTo(double.NegativeInfinity));
        var e = Assert.Throws<InvalidDataException>(() => JsonConfig.Parse("""{"a": Infinit}""", "broken.json"))!;
        Assert.That(e.Message, Does.Contain("broken.json"));
    }

    private static void CopyDirectory(string from, string to)
    {
        foreach (var d in Directory.GetDirectories(from, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, d)));
        foreach (var f in Directory.GetFiles(from, "*", SearchOption.AllDirectories))
            File.Copy(f, Path.Combine(to, Path.GetRelativePath(from, f)));
    }
}
