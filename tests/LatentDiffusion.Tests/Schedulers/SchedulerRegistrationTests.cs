using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Schedulers;
using LatentDiffusion.Tests.Pipelines;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>A user's scheduler registered by name is chosen everywhere a built-in one is: by name, by _class_name, in the pipeline with overrides.</summary>
public class SchedulerRegistrationTests
{
    /// <summary>A user scheduler: Euler with a step counter, built from the config it is given plus its overrides.</summary>
    private sealed class CountingScheduler(IScheduler inner, IReadOnlyDictionary<string, string>? overrides) : IScheduler
    {
        public int Steps;
        public IReadOnlyDictionary<string, string>? Overrides { get; } = overrides;
        public string ClassName => "CountingScheduler";
        public JsonConfig Config => inner.Config;
        public int NumTrainTimesteps => inner.NumTrainTimesteps;
        public ISchedulerRun Start(int inferenceSteps, torch.Generator? generator = null) => new Run(this, inner.Start(inferenceSteps, generator));
        public Tensor GetVelocity(Tensor sample, Tensor noise, Tensor timesteps) => inner.GetVelocity(sample, noise, timesteps);

        private sealed class Run(CountingScheduler owner, ISchedulerRun run) : ISchedulerRun
        {
            public IReadOnlyList<double> Timesteps => run.Timesteps;
            public IReadOnlyList<double>? Sigmas => run.Sigmas;
            public double InitNoiseSigma => run.InitNoiseSigma;
            public int Order => run.Order;
            public void SetBeginIndex(int beginIndex) => run.SetBeginIndex(beginIndex);
            public Tensor ScaleModelInput(Tensor sample, double timestep) => run.ScaleModelInput(sample, timestep);
            public Tensor Step(Tensor modelOutput, double timestep, Tensor sample)
            {
                Interlocked.Increment(ref owner.Steps);
                return run.Step(modelOutput, timestep, sample);
            }
            public Tensor AddNoise(Tensor original, Tensor noise, double timestep) => run.AddNoise(original, noise, timestep);
            public void Dispose() => run.Dispose();
        }
    }

    private static string UniqueName() => "counting-" + Guid.NewGuid().ToString("N")[..8];

    [Test]
    public void ARegisteredSchedulerIsChosenByNameInThePipelineWithItsOverrides()
    {
        string name = UniqueName();
        CountingScheduler? made = null;
        SchedulerRegistry.Register(name, (config, overrides) =>
            made = new CountingScheduler(SchedulerRegistry.Create("euler", config), overrides));
        try
        {
            Assert.That(SchedulerRegistry.Names, Does.Contain(name));
            var pipeline = GeneratedModel.Pipeline;
            var options = new GenerationOptions
            {
                Steps = 3, Seed = 4, Scheduler = name.ToUpperInvariant(),
                SchedulerOverrides = new Dictionary<string, string> { ["my_key"] = "7" },
            };
            using var mine = pipeline.Generate("a red circle", options);
            Assert.That(made, Is.Not.Null, "the pipeline did not build the registered scheduler");
            Assert.That(made!.Steps, Is.EqualTo(3));
            Assert.That(made.Overrides!["my_key"], Is.EqualTo("7"), "overrides did not reach the user's factory");
            // It wraps Euler built from the model's config, so the picture is Euler's.
            using var euler = pipeline.Generate("a red circle", options with { Scheduler = "euler", SchedulerOverrides = null });
            Assert.That(mine.Pixels.eq(euler.Pixels).all().item<bool>(), Is.True);
        }
        finally { SchedulerRegistry.Unregister(name); }
        Assert.That(SchedulerRegistry.Names, Does.Not.Contain(name));
        Assert.Throws<ArgumentException>(() => SchedulerRegistry.Create(name, null));
    }

    [Test]
    public void AConfigNamingTheRegisteredClassBuildsIt()
    {
        string name = UniqueName(), className = "MyScheduler" + name[^8..];
        SchedulerRegistry.Register(name, (config, overrides) => new CountingScheduler(SchedulerRegistry.Create("ddim", config), overrides), className);
        try
        {
            var config = JsonConfig.Parse($$"""{"_class_name": "{{className}}", "num_train_timesteps": 1000}""", "user config");
            Assert.That(SchedulerRegistry.FromConfig(config), Is.InstanceOf<CountingScheduler>());
            Assert.That(SchedulerRegistry.ClassNames, Does.Contain(className));
            Assert.That(SchedulerRegistry.ClassNameOf(name), Is.EqualTo(className));
        }
        finally { SchedulerRegistry.Unregister(name); }
    }

    [Test]
    public void NamesAreUniqueAndBuiltInsStay()
    {
        Assert.Throws<ArgumentException>(() => SchedulerRegistry.Register("Euler", (c, o) => SchedulerRegistry.Create("euler", c)));
        Assert.Throws<ArgumentException>(() => SchedulerRegistry.Register("bad name!", (c, o) => SchedulerRegistry.Create("euler", c)));
        Assert.Throws<ArgumentException>(() => SchedulerRegistry.Register(" ", (c, o) => SchedulerRegistry.Create("euler", c)));
        Assert.That(SchedulerRegistry.Unregister("euler"), Is.False, "a built-in scheduler cannot be removed");
        Assert.That(SchedulerRegistry.Names, Does.Contain("euler"));
        string name = UniqueName();
        SchedulerRegistry.Register(name, (c, o) => SchedulerRegistry.Create("euler", c));
        try { Assert.Throws<ArgumentException>(() => SchedulerRegistry.Register(name, (c, o) => SchedulerRegistry.Create("euler", c))); }
        finally { SchedulerRegistry.Unregister(name); }
    }
}
