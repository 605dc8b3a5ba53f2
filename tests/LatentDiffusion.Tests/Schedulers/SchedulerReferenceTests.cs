using System.Text.Json;
using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using LatentDiffusion.Schedulers;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>
/// Every <c>sched/...</c> case of the reference fixtures, driven by the same toy model as make-reference.py:
/// eps = tanh(scale_model_input(x, t))·0.5 + 0.01·t/1000, x_T from the seeded generator that then feeds the steps.
/// </summary>
[TestFixture]
public sealed class SchedulerReferenceTests
{
    /// <summary>reference.json's scheduler cases (parsed leniently: the reference writes -Infinity bare).</summary>
    public static IEnumerable<TestCaseData> Cases() => Fixtures.CaseSource(ReadCases, "");

    private static IEnumerable<TestCaseData> ReadCases()
    {
        var path = Fixtures.PathOf("reference.json");
        var root = SchedulerConfig.Parse(File.ReadAllText(path), path).Root;
        foreach (var c in root.GetProperty("cases").EnumerateArray())
        {
            if (c.GetProperty("kind").GetString() != "scheduler") continue;
            string key = c.GetProperty("key").GetString()!;
            yield return new TestCaseData(key).SetName($"Reference({key.Replace("sched/", "").Replace('/', '_')})");
        }
    }

    internal static JsonElement CaseOf(string key)
    {
        var path = Fixtures.PathOf("reference.json");
        var root = SchedulerConfig.Parse(File.ReadAllText(path), path).Root;
        return root.GetProperty("cases").EnumerateArray().Single(c => c.TryGetProperty("key", out var k) && k.GetString() == key);
    }

    /// <summary>The case's scheduler config with <c>_class_name</c>, as a scheduler_config.json would have it.</summary>
    internal static JsonConfig ConfigOf(JsonElement c)
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(c.GetProperty("config").GetRawText())!.AsObject();
        node["_class_name"] = c.GetProperty("scheduler").GetString();
        return SchedulerConfig.Parse(node.ToJsonString(), c.GetProperty("key").GetString()!);
    }

    /// <summary>The classes whose reference timesteps are integers (int64 in the reference; stored as float32 in the fixtures).</summary>
    internal static readonly HashSet<string> IntegerTimestepClasses =
    [
        "DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LCMScheduler", "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler",
        "UniPCMultistepScheduler", "DEISMultistepScheduler",
    ];

    /// <summary>
    /// Integer schedules (decided by the class, as the reference's dtype is, not by looking at the values) must be
    /// integers and equal. Schedules with fractional timesteps (the sigma schedulers: Karras sigmas mapped back to t,
    /// KDPM2 midpoints) interpolate in numpy's float32 log σ, which can differ from the C library's by an ulp; divided
    /// by the log-σ spacing of adjacent training steps that moves t by up to ~1e-5, so there each value must agree
    /// within 1e-4 (1e-7 of the timestep range).
    /// </summary>
    internal static void AssertTimesteps(IReadOnlyList<double> actual, double[] expected, bool integral)
    {
        Assert.That(actual, Has.Count.EqualTo(expected.Length), "timesteps: count");
        if (integral)
        {
            Assert.That(actual.All(t => t == Math.Floor(t)), Is.True, "timesteps must be integers");
            Assert.That(actual, Is.EqualTo(expected), "timesteps");
            return;
        }
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.That(actual[i], Is.EqualTo(expected[i]).Within(1e-4), $"timesteps[{i}]");
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesReference(string key)
    {
        var c = CaseOf(key);
        var overrides = new Dictionary<string, string>();
        if (c.GetProperty("step_kwargs").TryGetProperty("eta", out var eta)) overrides["eta"] = eta.GetRawText();
        var scheduler = SchedulerRegistry.FromConfig(ConfigOf(c), overrides);
        Assert.That(scheduler.ClassName, Is.EqualTo(c.GetProperty("scheduler").GetString()));
        int steps = c.GetProperty("steps").GetInt32();
        if (scheduler.ClassName == "LCMScheduler") steps = Math.Min(steps, 8);

        using var scope = NewDisposeScope();
        using var generator = new torch.Generator((ulong)c.GetProperty("noise_seed").GetInt64(), CPU);
        using var run = scheduler.Start(steps, generator);

        var expectedT = Fixtures.Expected(key + "/timesteps").to(ScalarType.Float64).data<double>().ToArray();
        AssertTimesteps(run.Timesteps, expectedT, IntegerTimestepClasses.Contains(scheduler.ClassName));
        if (Fixtures.Reference.Contains(key + "/sigmas"))
        {
            Assert.That(run.Sigmas, Is.Not.Null, "sigmas");
            AssertTensor.RelativeClose(torch.tensor(run.Sigmas!.ToArray()), Fixtures.Expected(key + "/sigmas"), 1e-6, "sigmas");
        }

        var x = torch.randn([1, 4, 8, 8], dtype: ScalarType.Float32, generator: generator) * run.InitNoiseSigma;
        AssertTensor.RelativeClose(x, Fixtures.Expected(key + "/x_T"), 1e-6, "x_T");
        foreach (var t in run.Timesteps)
        {
            var input = run.ScaleModelInput(x, t);
            var eps = torch.tanh(input) * 0.5 + 0.01 * t / 1000.0;
            x = run.Step(eps, t, x);
        }
        AssertTensor.RelativeClose(x, Fixtures.Expected(key + "/x_0"), 1e-5, "x_0");
    }
}
