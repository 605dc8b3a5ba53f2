using System.Reflection;
using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Schedulers;
using LatentDiffusion.Tests.Pipelines;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>
/// A user's scheduler derived from the public bases (<see cref="DiffusionScheduler"/>, <see cref="AlphaScheduleRun"/>)
/// is a first-class citizen: built by the base's config merge, registered, chosen in the pipeline by name and by
/// <c>_class_name</c>, with overrides.
/// </summary>
public class UserSchedulerTests
{
    /// <summary>
    /// Deterministic DDIM (η = 0, "leading" spacing) written only against the public and protected surface, as a user
    /// outside the library would. Same arithmetic in the same order as the built-in DDIMScheduler, so its images match
    /// the built-in's bit for bit.
    /// </summary>
    private sealed class UserDdimScheduler : DiffusionScheduler
    {
        private static readonly (string Key, object? Default)[] Keys =
        [
            .. BetaScheduleKeys, ("prediction_type", "epsilon"), ("steps_offset", 0), ("set_alpha_to_one", true),
            ("clip_sample", true), ("clip_sample_range", 1.0),
        ];

        private readonly int _stepsOffset;
        private readonly float _finalAlphaCumprod;
        private readonly double? _clipRange;

        public UserDdimScheduler(string className, JsonConfig? config, IReadOnlyDictionary<string, string>? overrides)
            : base(className, Keys, config, overrides)
        {
            // The effective config holds every declared key, so these fallbacks are never used.
            _stepsOffset = Config.Int("steps_offset", 0);
            _finalAlphaCumprod = Config.Bool("set_alpha_to_one", true) ? 1f : CumulativeAlphas[0];
            _clipRange = Config.Bool("clip_sample", true) ? Config.Double("clip_sample_range", 1.0) : null;
        }

        protected override ISchedulerRun CreateRun(int inferenceSteps, torch.Generator? generator)
        {
            int ratio = NumTrainTimesteps / inferenceSteps;
            var timesteps = Enumerable.Range(0, inferenceSteps).Reverse().Select(i => (double)(i * ratio + _stepsOffset)).ToArray();
            return new Run(this, timesteps, generator);
        }

        private sealed class Run(UserDdimScheduler s, double[] timesteps, torch.Generator? generator) : AlphaScheduleRun(s.CumulativeAlphas, timesteps, generator)
        {
            public override Tensor Step(Tensor modelOutput, double timestep, Tensor sample)
            {
                int i = CurrentIndex(timestep);
                EnsureNotFinished(i);
                using var scope = torch.NewDisposeScope();
                int t = (int)timestep, prev = t - s.NumTrainTimesteps / Timesteps.Count;
                float a = s.CumulativeAlphas[t];
                float aPrev = prev >= 0 ? s.CumulativeAlphas[prev] : s._finalAlphaCumprod;
                var x0 = (sample - MathF.Sqrt(1f - a) * modelOutput) / MathF.Sqrt(a);
                if (s._clipRange is double r) x0 = x0.clamp(-r, r);
                var prevSample = MathF.Sqrt(aPrev) * x0 + MathF.Sqrt(1f - aPrev) * modelOutput;
                StepIndex = i + 1;
                return prevSample.MoveToOuterDisposeScope();
            }
        }
    }

    private static string UniqueName() => "user-ddim-" + Guid.NewGuid().ToString("N")[..8];

    /// <summary>Registers the user's DDIM under <paramref name="name"/> and the class name <c>UserDdimScheduler…</c>; returns the class name.</summary>
    private static string RegisterUserDdim(string name)
    {
        string className = "UserDdimScheduler" + name[^8..];
        SchedulerRegistry.Register(name, (config, overrides) => new UserDdimScheduler(className, config, overrides), className);
        return className;
    }

    [Test]
    public void AUserSchedulerDerivedFromThePublicBaseRunsInThePipelineByNameWithOverrides()
    {
        string name = UniqueName();
        RegisterUserDdim(name);
        try
        {
            var pipeline = GeneratedModel.Pipeline;
            var overrides = new Dictionary<string, string> { ["steps_offset"] = "0", ["clip_sample"] = "false" };
            var options = new GenerationOptions { Steps = 4, Seed = 11, Scheduler = name, SchedulerOverrides = overrides };
            using var mine = pipeline.Generate("a blue square", options);
            using var ddim = pipeline.Generate("a blue square", options with { Scheduler = "ddim" });
            Assert.That(mine.Pixels.eq(ddim.Pixels).all().item<bool>(), Is.True, "the user's DDIM differs from the built-in one on the same config and overrides");

            // The overrides reached it: its run is the built-in's with steps_offset 0, not the model's 1.
            var made = SchedulerRegistry.Create(name, pipeline.Scheduler.Config, overrides);
            Assert.That(made, Is.InstanceOf<UserDdimScheduler>());
            using var run = made.Start(4);
            Assert.That(run.Timesteps, Is.EqualTo(new double[] { 750, 500, 250, 0 }));
            Assert.That(made.Config.Bool("clip_sample", true), Is.False);
            // The base's merge: the model's keys the class knows (scaled_linear betas), unknown override keys refused.
            Assert.That(made.Config.String("beta_schedule", null), Is.EqualTo("scaled_linear"));
            var e = Assert.Throws<ArgumentException>(() => SchedulerRegistry.Create(name, null, new Dictionary<string, string> { ["eta_typo"] = "1" }))!;
            Assert.That(e.Message, Does.Contain("eta_typo").And.Contain("steps_offset"));
        }
        finally { SchedulerRegistry.Unregister(name); }
    }

    [Test]
    public void AModelWhoseConfigNamesTheUserClassUsesItWithOverrides()
    {
        string name = UniqueName(), className = RegisterUserDdim(name);
        try
        {
            var generated = GeneratedModel.Pipeline;
            var saved = TinyConfigs.Sd15SchedulerJson.Replace("\"PNDMScheduler\"", $"\"{className}\"");
            var scheduler = SchedulerRegistry.FromConfig(SchedulerConfig.Parse(saved, "user model scheduler_config.json"));
            Assert.That(scheduler, Is.InstanceOf<UserDdimScheduler>());
            Assert.That(scheduler.ClassName, Is.EqualTo(className));
            Assert.That(scheduler.Config.String("_class_name", null), Is.EqualTo(className), "the effective config must name the class so it round-trips");
            using var pipeline = new StableDiffusionPipeline(generated.Tokenizer, generated.TextEncoder, generated.UNet, generated.Vae, scheduler, leaveComponentsOpen: true);
            var overrides = new Dictionary<string, string> { ["set_alpha_to_one"] = "true" };
            // No scheduler name: the pipeline rebuilds its own scheduler from its config's _class_name with the overrides.
            using var mine = pipeline.Generate("a green circle", new GenerationOptions { Steps = 3, Seed = 5, SchedulerOverrides = overrides });
            using var ddim = generated.Generate("a green circle", new GenerationOptions { Steps = 3, Seed = 5, Scheduler = "ddim", SchedulerOverrides = overrides });
            Assert.That(mine.Pixels.eq(ddim.Pixels).all().item<bool>(), Is.True, "the pipeline did not run the user's class with the overrides");
            using var plain = pipeline.Generate("a green circle", new GenerationOptions { Steps = 3, Seed = 5 });
            Assert.That(plain.Pixels.eq(mine.Pixels).all().item<bool>(), Is.False, "set_alpha_to_one changes the last step, so the override must show");
        }
        finally { SchedulerRegistry.Unregister(name); }
    }

    [Test]
    public void ABadUserKeyTableIsRefusedAtConstruction()
    {
        var e = Assert.Throws<ArgumentException>(() => new DuplicateKeyScheduler())!;
        Assert.That(e.Message, Does.Contain("steps_offset").And.Contain("twice"));
    }

    private sealed class DuplicateKeyScheduler()
        : DiffusionScheduler("DuplicateKeyScheduler", [.. BetaScheduleKeys, ("steps_offset", 0), ("steps_offset", 1)], null, null)
    {
        protected override ISchedulerRun CreateRun(int inferenceSteps, torch.Generator? generator) => throw new NotImplementedException();
    }

    /// <summary>
    /// What lets a class in another assembly derive from the bases (the test project sees the library's internals, so
    /// compiling the classes above alone would not show it; docs/schedulers.md's example compiles without them): the
    /// bases are public, every abstract member is public or protected, and a constructor is protected or public.
    /// </summary>
    [TestCase(typeof(DiffusionScheduler))]
    [TestCase(typeof(SchedulerRun))]
    [TestCase(typeof(AlphaScheduleRun))]
    [TestCase(typeof(SigmaScheduleRun))]
    public void TheBaseIsDerivableOutsideTheLibrary(Type type)
    {
        Assert.That(type.IsPublic && type.IsAbstract, Is.True, $"{type.Name} must be a public abstract class");
        const BindingFlags all = BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic;
        var hidden = type.GetMethods(all).Where(m => m.IsAbstract && !(m.IsPublic || m.IsFamily || m.IsFamilyOrAssembly)).Select(m => m.Name).ToArray();
        Assert.That(hidden, Is.Empty, $"{type.Name} has abstract members a user cannot implement");
        Assert.That(type.GetConstructors(all).Any(c => c.IsPublic || c.IsFamily || c.IsFamilyOrAssembly), Is.True, $"{type.Name} has no constructor a user can call");
    }
}
