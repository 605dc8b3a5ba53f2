using System.Text.RegularExpressions;
using LatentDiffusion.Formats;
using LatentDiffusion.Schedulers;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>
/// Every built-in scheduler reads its config once, when it is built, into typed values: a bad value is refused there,
/// with the key, the value and what is allowed, not at Start or mid-run; and no scheduler reads the JSON afterwards.
/// </summary>
public sealed class SchedulerConfigValidationTests
{
    /// <summary>The keys whose values are a closed set.</summary>
    private static readonly HashSet<string> ChoiceKeys =
    [
        "timestep_spacing", "beta_schedule", "prediction_type", "final_sigmas_type", "interpolation_type", "timestep_type",
        "variance_type", "algorithm_type", "solver_type", "sigma_schedule",
    ];

    /// <summary>Numbers outside their range (or NaN), as override text.</summary>
    private static readonly (string Key, string Value)[] BadNumbers =
    [
        ("steps_offset", "-1"), ("num_train_timesteps", "0"), ("beta_start", "NaN"), ("beta_end", "1.5"), ("dynamic_thresholding_ratio", "1.5"),
        ("sample_max_value", "-1"), ("clip_sample_range", "NaN"), ("timestep_scaling", "NaN"), ("sigma_max", "NaN"), ("sigma_data", "-1"),
        ("solver_order", "0"), ("original_inference_steps", "0"), ("lambda_min_clipped", "NaN"), ("rho", "NaN"),
    ];

    private static readonly string[] BuiltInClasses =
    [
        "DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LMSDiscreteScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
        "HeunDiscreteScheduler", "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "KDPM2DiscreteScheduler",
        "KDPM2AncestralDiscreteScheduler", "UniPCMultistepScheduler", "DEISMultistepScheduler", "LCMScheduler", "TCDScheduler",
        "DPMSolverSDEScheduler", DpmSolverPlusPlus2SAncestralScheduler.Name, "EDMEulerScheduler", "EDMDPMSolverMultistepScheduler",
    ];

    private static JsonConfig Empty(string className) => JsonConfig.Parse($$"""{"_class_name": "{{className}}"}""", "test config");

    private static IReadOnlyList<string> KeysOf(string className)
        => [.. SchedulerRegistry.FromConfig(Empty(className)).Config.Root.EnumerateObject().Select(p => p.Name).Where(n => !n.StartsWith('_'))];

    [TestCaseSource(nameof(BuiltInClasses))]
    public void AnUnknownChoiceIsRefusedAtConstructionNamingTheKeyTheValueAndTheAllowedOnes(string className)
    {
        int checkedKeys = 0;
        foreach (var key in KeysOf(className).Where(ChoiceKeys.Contains))
        {
            var overrides = new Dictionary<string, string> { [key] = "foo" };
            var e = Assert.Throws<NotSupportedException>(() => SchedulerRegistry.FromConfig(Empty(className), overrides), $"{className} {key}=foo")!;
            Assert.That(e.Message, Does.Contain(key).And.Contain("foo").And.Contain("supported: "), $"{className} {key}=foo");
            checkedKeys++;
        }
        Assert.That(checkedKeys, Is.GreaterThan(0), "every class has a closed-set key");
    }

    [TestCaseSource(nameof(BuiltInClasses))]
    public void AnOutOfRangeOrNaNNumberIsRefusedAtConstructionNamingTheKeyAndTheValue(string className)
    {
        var keys = KeysOf(className);
        foreach (var (key, value) in BadNumbers.Where(b => keys.Contains(b.Key)))
        {
            var overrides = new Dictionary<string, string> { [key] = value };
            var e = Assert.Catch(() => SchedulerRegistry.FromConfig(Empty(className), overrides), $"{className} {key}={value}")!;
            Assert.That(e, Is.InstanceOf<InvalidDataException>().Or.InstanceOf<NotSupportedException>(), $"{className} {key}={value}: {e}");
            Assert.That(e.Message, Does.Contain(key).And.Contain(value), $"{className} {key}={value}");
        }
    }

    [Test]
    public void AModelConfigWithNaNOrNullWhereANumberBelongsIsRefusedByName()
    {
        var nan = JsonConfig.Parse("""{"_class_name": "DDIMScheduler", "beta_start": NaN}""", "nan.json");
        var e = Assert.Throws<InvalidDataException>(() => SchedulerRegistry.FromConfig(nan))!;
        Assert.That(e.Message, Does.Contain("nan.json").And.Contain("beta_start").And.Contain("NaN"));
        var nullOffset = JsonConfig.Parse("""{"_class_name": "EulerDiscreteScheduler", "steps_offset": null}""", "null.json");
        e = Assert.Throws<InvalidDataException>(() => SchedulerRegistry.FromConfig(nullOffset))!;
        Assert.That(e.Message, Does.Contain("steps_offset").And.Contain("null"));
    }

    [Test]
    public void ANegativeStepsOffsetFailsWhenTheSchedulerIsBuiltNotAtStart()
    {
        // It used to pass construction and fail at Start with timesteps below 0.
        var e = Assert.Throws<InvalidDataException>(() => SchedulerRegistry.Create("ddim", TinyConfigs.Sd15Scheduler, new Dictionary<string, string> { ["steps_offset"] = "-5" }))!;
        Assert.That(e.Message, Does.Contain("steps_offset").And.Contain("-5").And.Contain("0 or more"));
    }

    [TestCase("lms", "rescale_betas_zero_snr")]
    [TestCase("edm-euler", "rescale_betas_zero_snr")]
    [TestCase("euler-a", "use_karras_sigmas")]
    [TestCase("edm-euler", "timestep_spacing")]
    public void AKeyTheClassDoesNotHaveDoesNotAffectIt(string name, string carriedKey)
    {
        // Carried over from the model's config (as the reference's hidden keys): read as absent, whatever its value.
        string value = carriedKey == "timestep_spacing" ? "\"trailing\"" : "true";
        var carried = JsonConfig.Parse($$"""{"_class_name": "PNDMScheduler", "{{carriedKey}}": {{value}}}""", "carried");
        var plain = JsonConfig.Parse("""{"_class_name": "PNDMScheduler"}""", "plain");
        var withKey = SchedulerRegistry.Create(name, carried);
        Assert.That(withKey.Config.Has(carriedKey), Is.True, "the key rides along in the config");
        using var a = withKey.Start(5);
        using var b = SchedulerRegistry.Create(name, plain).Start(5);
        Assert.That(a.Timesteps, Is.EqualTo(b.Timesteps));
        Assert.That(a.Sigmas, Is.EqualTo(b.Sigmas));
    }

    /// <summary>
    /// The JSON is read in one place (the reader, at construction); no scheduler source asks it for a value with a
    /// call-site default, which is how defaults used to disagree and settings used to be re-read every step.
    /// </summary>
    [Test]
    public void NoSchedulerReadsTheJsonConfigWithACallSiteDefault()
    {
        var folder = Path.Combine(RepositoryRoot(), "src", "LatentDiffusion", "Schedulers");
        var reads = new Regex(@"\bConfig\.(Int|Double|Bool|String|Has|IntArray|DoubleArray|RequireOneOf)\(|\bconfig\.(Int|Double|Bool|String|Has|IntArray|DoubleArray)\(");
        var allowed = new[] { "SchedulerConfigReader.cs", "NoiseScheduleConfig.cs", "SchedulerRegistry.cs", "SchedulerConfig.cs" };
        var found = Directory.EnumerateFiles(folder, "*.cs")
            .Where(f => !allowed.Contains(Path.GetFileName(f)))
            .SelectMany(f => File.ReadLines(f).Select((line, i) => (File: Path.GetFileName(f), Line: i + 1, Text: line.Trim())))
            .Where(l => !l.Text.StartsWith("///") && reads.IsMatch(l.Text))
            .Select(l => $"{l.File}:{l.Line}: {l.Text}")
            .ToList();
        Assert.That(found, Is.Empty, "read the config once through SchedulerConfigReader / NoiseScheduleConfig");
    }

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "LatentDiffusion.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException("The repository root (LatentDiffusion.sln) was not found above the test assembly.");
    }
}
