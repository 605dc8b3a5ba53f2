using LatentDiffusion.Pipelines;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary>The fixture pipelines, loaded once per test run (float32, CPU) and shared by read-only tests.</summary>
public static class TinyModels
{
    private static readonly Dictionary<string, StableDiffusionPipeline> Loaded = new();

    /// <summary>"tiny-sd15" or "tiny-sd2v".</summary>
    public static StableDiffusionPipeline Get(string model)
    {
        lock (Loaded)
        {
            if (!Loaded.TryGetValue(model, out var p))
                Loaded[model] = p = StableDiffusionPipeline.LoadAsync(Fixtures.PathOf(model)).GetAwaiter().GetResult();
            return p;
        }
    }
}
