using System.Text.Json;
using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using LatentDiffusion.Schedulers;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>Registry, configuration, bad input, img2img helpers and run isolation.</summary>
[TestFixture]
public sealed class SchedulerBehaviourTests
{
    private static JsonConfig Sd15Config => TinyConfigs.Sd15Scheduler;

    private static JsonConfig Sd2Config => TinyConfigs.Sd2vScheduler;

    /// <summary>Runs the toy model of the reference fixtures through a whole run; returns x_0.</summary>
    private static Tensor Denoise(ISchedulerRun run, torch.Generator generator, IEnumerable<double>? timesteps = null, Tensor? start = null)
    {
        var x = start?.clone() ?? torch.randn([1, 4, 8, 8], dtype: ScalarType.Float32, generator: generator) * run.InitNoiseSigma;
        foreach (var t in timesteps ?? run.Timesteps)
        {
            using var input = run.ScaleModelInput(x, t);
            using var eps = torch.tanh(input) * 0.5 + 0.01 * t / 1000.0;
            var next = run.Step(eps, t, x);
            x.Dispose();
            x = next;
        }
        return x;
    }

    [Test]
    public void NamesAreTheDocumentedOnes()
        => Assert.That(SchedulerRegistry.Names, Is.EqualTo(new[]
        {
            "ddim", "ddpm", "pndm", "lms", "euler", "euler-a", "heun", "dpm++2m", "dpm++2m-karras", "dpm++2m-sde-karras",
            "dpm++2s", "kdpm2", "kdpm2-a", "unipc", "deis", "lcm", "dpm++2m-sde", "dpm++3m-sde", "dpm++3m-sde-karras",
            "dpm++2s-a", "tcd", "dpm++sde", "dpm++sde-karras", "edm-euler", "edm-dpm++2m", "edm-dpm++2m-sde",
        }));

    [Test]
    public void EveryNameBuildsFromAModelConfigAndDenoises([Values] bool sd2)
    {
        foreach (var name in SchedulerRegistry.Names)
        {
            var scheduler = SchedulerRegistry.Create(name, sd2 ? Sd2Config : Sd15Config);
            Assert.That(scheduler.ClassName, Is.EqualTo(SchedulerRegistry.ClassNameOf(name)), name);
            Assert.That(SchedulerRegistry.A1111NameOf(name), Is.Not.Empty);
            using var scope = NewDisposeScope();
            using var g = new torch.Generator(1, CPU);
            using var run = scheduler.Start(4, g);
            var x = Denoise(run, g);
            Assert.That(x.isfinite().all().item<bool>(), Is.True, name);
        }
    }

    [Test]
    public void UnknownNameListsTheSupportedOnes()
    {
        var e = Assert.Throws<ArgumentException>(() => SchedulerRegistry.Create("dpm++4m", null))!;
        Assert.That(e.Message, Does.Contain("dpm++4m").And.Contain("dpm++2m-karras").And.Contain("euler-a"));
    }

    [Test]
    public void UnknownClassNameIsRefused()
    {
        var config = SchedulerConfig.Parse("""{"_class_name": "FlowMatchEulerDiscreteScheduler"}""", "test");
        var e = Assert.Throws<NotSupportedException>(() => SchedulerRegistry.FromConfig(config))!;
        Assert.That(e.Message, Does.Contain("FlowMatchEulerDiscreteScheduler").And.Contain("DPMSolverMultistepScheduler"));
    }

    [TestCase(0)]
    [TestCase(-3)]
    [TestCase(1001)]
    public void StepCountsOutsideTheTrainingRangeAreRefused(int steps)
    {
        foreach (var name in SchedulerRegistry.Names)
            Assert.Throws<ArgumentOutOfRangeException>(() => SchedulerRegistry.Create(name, Sd15Config).Start(steps), name);
    }

    [Test]
    public void LeadingSpacingThatOverrunsTheTrainedTimestepsIsRefused()
    {
        // SD 1.5's config: "leading" with steps_offset 1 would start at t = 1000 for 1000 steps.
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => SchedulerRegistry.Create("ddim", Sd15Config).Start(1000))!;
        Assert.That(e.Message, Does.Contain("steps_offset"));
        using var run = SchedulerRegistry.Create("ddim", Sd15Config).Start(500);
        Assert.That(run.Timesteps[0], Is.EqualTo(999));
    }

    [Test]
    public void LcmRefusesMoreStepsThanItWasDistilledWith()
        => Assert.Throws<ArgumentOutOfRangeException>(() => SchedulerRegistry.Create("lcm", Sd15Config).Start(51));

    [TestCase("beta_schedule", "\"sigmoid\"", "scaled_linear")]
    [TestCase("prediction_type", "\"flow_prediction\"", "v_prediction")]
    [TestCase("timestep_spacing", "\"uniform\"", "trailing")]
    public void UnsupportedConfigValuesAreRefusedWithTheSupportedOnes(string key, string value, string listed)
    {
        var config = SchedulerConfig.Parse($$"""{"_class_name": "EulerDiscreteScheduler", "{{key}}": {{value}}}""", "test");
        var e = Assert.Throws<NotSupportedException>(() => SchedulerRegistry.FromConfig(config))!;
        Assert.That(e.Message, Does.Contain(key).And.Contain(listed));
    }

    [Test]
    public void UnsupportedSolverSettingsAreRefused()
    {
        Assert.Throws<NotSupportedException>(() => SchedulerRegistry.Create("dpm++2m", null, new Dictionary<string, string> { ["algorithm_type"] = "dpmsolver" }));
        Assert.Throws<NotSupportedException>(() => SchedulerRegistry.Create("dpm++2s", null, new Dictionary<string, string> { ["algorithm_type"] = "dpmsolver" }));
        Assert.Throws<NotSupportedException>(() => SchedulerRegistry.Create("ddpm", null, new Dictionary<string, string> { ["variance_type"] = "fixed_large_log" }));
        Assert.Throws<NotSupportedException>(() => SchedulerRegistry.Create("euler", null, new Dictionary<string, string> { ["use_beta_sigmas"] = "true", ["use_exponential_sigmas"] = "true" }));
    }

    [Test]
    public void OverridesMustNameKeysOfTheClass()
    {
        var e = Assert.Throws<ArgumentException>(() => SchedulerRegistry.Create("euler-a", null, new Dictionary<string, string> { ["use_karras_sigmas"] = "true" }))!;
        Assert.That(e.Message, Does.Contain("use_karras_sigmas").And.Contain("timestep_spacing"));
        Assert.Throws<ArgumentException>(() => SchedulerRegistry.Create("euler", null, new Dictionary<string, string> { ["use_karras_sigmas"] = "maybe" }));
    }

    [Test]
    public void OverridesSetConfigFields()
    {
        // Euler from SD 1.5's PNDM config, Karras sigmas and v-prediction by override: the euler_karras_v reference case.
        var scheduler = SchedulerRegistry.Create("euler", null, new Dictionary<string, string>
        {
            ["beta_start"] = "0.00085", ["beta_end"] = "0.012", ["beta_schedule"] = "scaled_linear",
            ["use_karras_sigmas"] = "true", ["prediction_type"] = "v_prediction",
        });
        Assert.That(scheduler.Config.Bool("use_karras_sigmas", false), Is.True);
        using var run = scheduler.Start(10);
        AssertTensor.RelativeClose(torch.tensor(run.Sigmas!.ToArray()), Fixtures.Expected("sched/euler_karras_v/10/sigmas"), 1e-6, "sigmas");
    }

    [Test]
    public void DdimTakesEtaAsAnOverride()
    {
        var scheduler = (DdimScheduler)SchedulerRegistry.Create("ddim", Sd15Config, new Dictionary<string, string> { ["eta"] = "1" });
        Assert.That(scheduler.Eta, Is.EqualTo(1.0));
        Assert.That(scheduler.Config.Has("eta"), Is.False);
    }

    /// <summary>from_config semantics: the effective config equals what the reference had after X.from_config(model config).</summary>
    [Test]
    public void EffectiveConfigsMatchTheReferencePipelines()
    {
        var path = Fixtures.PathOf("reference.json");
        var root = SchedulerConfig.Parse(File.ReadAllText(path), path).Root;
        int compared = 0;
        // The reference swaps schedulers in a chain, each from the previous one's config (model → default → DDIM →
        // Euler a → DPM++ 2M Karras), so unused keys ride along; do the same.
        var chain = new Dictionary<string, IScheduler>();
        foreach (var (variant, sd2) in new[] { ("sd15", false), ("sd2v", true) })
        {
            chain[$"{variant}/default"] = SchedulerRegistry.FromConfig(sd2 ? Sd2Config : Sd15Config);
            // The reference's in-memory default scheduler remembers which keys it left at their defaults
            // ("_use_default_values", not saved to disk); continue the chain from it.
            var defaultCase = root.GetProperty("cases").EnumerateArray().First(c => c.TryGetProperty("key", out var k) && k.GetString() == $"{variant}/txt2img/default/42");
            var node = System.Text.Json.Nodes.JsonNode.Parse(defaultCase.GetProperty("scheduler_config").GetRawText())!.AsObject();
            node["_class_name"] = defaultCase.GetProperty("scheduler").GetString();
            var inMemory = SchedulerConfig.Parse(node.ToJsonString(), "reference default scheduler");
            chain[$"{variant}/ddim"] = SchedulerRegistry.Create("ddim", inMemory);
            chain[$"{variant}/euler_a"] = SchedulerRegistry.Create("euler-a", chain[$"{variant}/ddim"].Config);
            chain[$"{variant}/dpmpp_2m_karras"] = SchedulerRegistry.Create("dpm++2m-karras", chain[$"{variant}/euler_a"].Config);
        }
        foreach (var c in root.GetProperty("cases").EnumerateArray())
        {
            if (c.GetProperty("kind").GetString() != "txt2img") continue;
            string key = c.GetProperty("key").GetString()!;
            var scheduler = chain[string.Join('/', key.Split('/')[0], key.Split('/')[2])];
            Assert.That(scheduler.ClassName, Is.EqualTo(c.GetProperty("scheduler").GetString()), key);
            foreach (var p in c.GetProperty("scheduler_config").EnumerateObject())
            {
                if (p.Name.StartsWith('_')) continue;
                Assert.That(scheduler.Config.Root.TryGetProperty(p.Name, out var mine), Is.True, $"{key}: {p.Name} missing");
                Assert.That(Normalise(mine), Is.EqualTo(Normalise(p.Value)), $"{key}: {p.Name}");
            }
            Assert.That(scheduler.Config.Root.EnumerateObject().Count(p => !p.Name.StartsWith('_')),
                Is.EqualTo(c.GetProperty("scheduler_config").EnumerateObject().Count(p => !p.Name.StartsWith('_'))), $"{key}: key count");
            compared++;
        }
        Assert.That(compared, Is.EqualTo(24));
    }

    private static string Normalise(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Number => e.GetDouble().ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        JsonValueKind.String => e.GetString()!,
        _ => e.GetRawText(),
    };

    [TestCase(-0.01)]
    [TestCase(1.5)]
    [TestCase(double.NaN)]
    public void StrengthOutsideZeroToOneIsRefused(double strength)
    {
        using var run = SchedulerRegistry.Create("ddim", Sd15Config).Start(10);
        Assert.Throws<ArgumentOutOfRangeException>(() => Img2ImgSchedule.ForStrength(run, 10, strength));
    }

    [TestCase("ddim", 0.75, 3)]
    [TestCase("ddim", 0.3, 7)]
    [TestCase("heun", 0.75, 6)]
    [TestCase("euler", 1.0, 0)]
    [TestCase("kdpm2", 0.5, 10)]
    public void ForStrengthSkipsTheFirstStepsLikeTheReference(string name, double strength, int begin)
    {
        using var run = SchedulerRegistry.Create(name, Sd15Config).Start(10);
        var (timesteps, beginIndex) = Img2ImgSchedule.ForStrength(run, 10, strength);
        Assert.That(beginIndex, Is.EqualTo(begin));
        Assert.That(timesteps, Is.EqualTo(run.Timesteps.Skip(begin)));
    }

    [Test]
    public void SigmaSchedulersNoiseAndStepFromTheBeginIndex()
    {
        using var scope = NewDisposeScope();
        using var run = SchedulerRegistry.Create("euler", Sd15Config).Start(10);
        var (timesteps, begin) = Img2ImgSchedule.ForStrength(run, 10, 0.7);
        var original = torch.ones(1, 4, 8, 8);
        var noise = torch.full(1, 4, 8, 8, 2f);
        var noisy = run.AddNoise(original, noise, timesteps[0]);
        AssertTensor.MaxAbsClose(noisy, original + noise * (float)run.Sigmas![begin], 0, "noised to sigma[begin]");
        var scaled = run.ScaleModelInput(noisy, timesteps[0]);
        float sigma = (float)run.Sigmas![begin];
        AssertTensor.MaxAbsClose(scaled, noisy / MathF.Sqrt(sigma * sigma + 1f), 0, "scaled at sigma[begin]");
    }

    [Test]
    public void ForwardDiffusionAndVelocityAreConsistent()
    {
        using var scope = NewDisposeScope();
        var scheduler = SchedulerRegistry.Create("ddim", Sd2Config);
        using var g = new torch.Generator(5, CPU);
        var x0 = torch.randn([2, 4, 8, 8], generator: g);
        var noise = torch.randn([2, 4, 8, 8], generator: g);
        var t = torch.tensor(new long[] { 10, 900 });
        var xt = ((DiffusionScheduler)scheduler).AddNoise(x0, noise, t);
        var v = scheduler.GetVelocity(x0, noise, t);
        using var run = scheduler.Start(10);
        var single = run.AddNoise(x0[1..2], noise[1..2], 900);
        AssertTensor.RelativeClose(single, xt[1..2], 1e-7, "run.AddNoise");
        var ac = ForwardDiffusion.AddNoise(Enumerable.Repeat(0.25f, 1000).ToArray(), x0, noise, t);
        AssertTensor.RelativeClose(ac, 0.5f * x0 + MathF.Sqrt(0.75f) * noise, 1e-7, "closed form");
        var vel = ForwardDiffusion.GetVelocity(Enumerable.Repeat(0.25f, 1000).ToArray(), x0, noise, t);
        AssertTensor.RelativeClose(vel, 0.5f * noise - MathF.Sqrt(0.75f) * x0, 1e-7, "velocity closed form");
        // (x_t, v) is (x0, noise) rotated by the angle of ᾱ_t: x_t² + v² = x0² + noise², whatever ᾱ is.
        AssertTensor.RelativeClose(xt * xt + v * v, x0 * x0 + noise * noise, 1e-6, "rotation");
        Assert.That((v - noise).abs().max().item<float>(), Is.GreaterThan(0.1f), "v differs from noise");
    }

    [TestCase("dpm++2m-sde-karras")]
    [TestCase("euler-a")]
    [TestCase("unipc")]
    [TestCase("heun")]
    public void ConcurrentRunsFromOneSchedulerDoNotInterfere(string name)
    {
        var scheduler = SchedulerRegistry.Create(name, Sd15Config);
        Tensor Alone(ulong seed)
        {
            using var g = new torch.Generator(seed, CPU);
            using var run = scheduler.Start(12, g);
            return Denoise(run, g);
        }
        using var a = Alone(11);
        using var b = Alone(22);

        // Interleaved step by step on one thread.
        using (var scope = NewDisposeScope())
        using (var ga = new torch.Generator(11, CPU))
        using (var gb = new torch.Generator(22, CPU))
        using (var ra = scheduler.Start(12, ga))
        using (var rb = scheduler.Start(12, gb))
        {
            var xa = torch.randn([1, 4, 8, 8], generator: ga) * ra.InitNoiseSigma;
            var xb = torch.randn([1, 4, 8, 8], generator: gb) * rb.InitNoiseSigma;
            for (int i = 0; i < ra.Timesteps.Count; i++)
            {
                foreach (var (run, which) in new[] { (ra, 0), (rb, 1) })
                {
                    var x = which == 0 ? xa : xb;
                    double t = run.Timesteps[i];
                    var eps = torch.tanh(run.ScaleModelInput(x, t)) * 0.5 + 0.01 * t / 1000.0;
                    var next = run.Step(eps, t, x);
                    if (which == 0) xa = next; else xb = next;
                }
            }
            AssertTensor.MaxAbsClose(xa, a, 0, "interleaved run A");
            AssertTensor.MaxAbsClose(xb, b, 0, "interleaved run B");
        }

        // In parallel on several threads.
        var results = new Tensor[8];
        Parallel.For(0, results.Length, k => results[k] = Alone(k % 2 == 0 ? 11UL : 22UL));
        for (int k = 0; k < results.Length; k++)
        {
            AssertTensor.MaxAbsClose(results[k], k % 2 == 0 ? a : b, 0, $"parallel run {k}");
            results[k].Dispose();
        }
    }

    [Test]
    public void ARunRefusesStepsPastTheEndAndUseAfterDispose()
    {
        var scheduler = SchedulerRegistry.Create("euler", Sd15Config);
        var run = scheduler.Start(2);
        using var x = torch.zeros(1, 4, 8, 8);
        foreach (var t in run.Timesteps) run.Step(x, t, x).Dispose();
        Assert.Throws<InvalidOperationException>(() => run.Step(x, run.Timesteps[^1], x));
        run.Dispose();
        Assert.Throws<ObjectDisposedException>(() => run.Step(x, run.Timesteps[0], x));
    }

    [Test]
    public void ConfigFilesWithPythonInfinityParse()
    {
        var config = SchedulerConfig.Parse("""{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity, "use_karras_sigmas": true}""", "test");
        var scheduler = SchedulerRegistry.FromConfig(config);
        Assert.That(scheduler.Config.Double("lambda_min_clipped", 0), Is.EqualTo(double.NegativeInfinity));
        Assert.That(scheduler.Config.Bool("use_karras_sigmas", false), Is.True);
    }

    /// <summary>
    /// rescale_betas_zero_snr (Lin et al., "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1):
    /// √ᾱ is shifted and scaled so that the first step keeps its value and the last reaches 0. Checked against the
    /// formula in double; sigma-based schedulers then patch the last ᾱ to 2^-24 as the reference does, the others keep 0.
    /// At t = 999 the forward process returns pure noise and the v target is −x0.
    /// </summary>
    [Test]
    public void ZeroTerminalSnrRescalesTheSchedule()
    {
        JsonConfig Config(string cls) => JsonConfig.Parse($$"""
            { "_class_name": "{{cls}}", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
              "prediction_type": "v_prediction", "rescale_betas_zero_snr": true, "timestep_spacing": "trailing" }
            """, "zero snr test");
        var plain = (DiffusionScheduler)SchedulerRegistry.FromConfig(JsonConfig.Parse("""{ "_class_name": "DDPMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012 }""", "plain"));
        var ddpm = (DiffusionScheduler)SchedulerRegistry.FromConfig(Config("DDPMScheduler"));
        var dpm = (DiffusionScheduler)SchedulerRegistry.FromConfig(Config("DPMSolverMultistepScheduler"));
        double first = Math.Sqrt(plain.AlphasCumprod[0]), last = Math.Sqrt(plain.AlphasCumprod[^1]);
        Assert.That(last, Is.GreaterThan(0.05), "the SD schedule itself must leave signal at t = 999");
        for (int t = 0; t < 1000; t += 37)
        {
            double expected = (Math.Sqrt(plain.AlphasCumprod[t]) - last) * first / (first - last);
            Assert.That(Math.Sqrt(ddpm.AlphasCumprod[t]), Is.EqualTo(expected).Within(2e-5), $"sqrt(alphas_cumprod[{t}])");
        }
        Assert.That(ddpm.AlphasCumprod[^1], Is.LessThan(1e-9f));
        Assert.That(dpm.AlphasCumprod[^1], Is.EqualTo(MathF.Pow(2, -24)));
        Assert.That(dpm.AlphasCumprod[..^1], Is.EqualTo(ddpm.AlphasCumprod[..^1]));

        using var x0 = torch.randn([1, 4, 4, 4], generator: torch.manual_seed(1));
        using var noise = torch.randn([1, 4, 4, 4], generator: torch.manual_seed(2));
        using var noisy = ddpm.AddNoise(x0, noise, 999);
        using var v = ddpm.GetVelocity(x0, noise, torch.tensor(new long[] { 999 }));
        Assert.That((noisy - noise).abs().max().item<float>(), Is.LessThan(1e-4f), "x_999 must be pure noise");
        Assert.That((v + x0).abs().max().item<float>(), Is.LessThan(1e-4f), "v at SNR 0 must be -x0");
        // The reference's trailing spacing: arange(1000, 0, -1000/25).round() - 1 = 999, 959, ..., 39.
        using var run = dpm.Start(25);
        Assert.That(run.Timesteps, Is.EqualTo(Enumerable.Range(0, 25).Select(k => 999.0 - 40 * k)), "trailing steps start at t = 999");
    }
}
