using System.Text.Json;
using LatentDiffusion.Formats;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests;

/// <summary>
/// The reference fixtures: <c>../shared/fixtures</c> beside the repository root, or the folder named by
/// LATENTDIFFUSION_FIXTURES. Every member that reads them (<see cref="Root"/>, <see cref="PathOf"/>, <see cref="Expected"/>,
/// <see cref="Reference"/>, <see cref="Cases"/>, <see cref="Require"/>) ends the test when they are missing: as
/// Ignored (shown and counted as skipped, with <see cref="MissingReason"/>) on a plain clone, as a failure under CI (CI=true) or
/// when LATENTDIFFUSION_FIXTURES is set. Test case sources that read them go through <see cref="CaseSource"/>. Read them
/// outside <c>Assert.Throws</c> / <c>Assert.That(() =&gt; ...)</c> lambdas (or call <see cref="Require"/> first): those
/// catch the skip as the wrong exception. Tests that only need some model use <c>Pipelines.GeneratedModel</c> or
/// <see cref="TinyConfigs"/> instead, and run everywhere.
/// </summary>
public static class Fixtures
{
    /// <summary>The environment variable that names the fixtures folder; when set, a missing folder fails the test.</summary>
    public const string Variable = "LATENTDIFFUSION_FIXTURES";

    private static readonly Lazy<FixtureLocation> LocationLazy = new(() => FixtureLocation.Decide(
        Environment.GetEnvironmentVariable(Variable), Environment.GetEnvironmentVariable("CI"), FindBesideRepository()));
    private static readonly Lazy<SafetensorsFile> ReferenceLazy = new(() => SafetensorsFile.Open(Path.Combine(Root, "reference.safetensors")));
    // The reference writes Python's bare -Infinity/Infinity/NaN (lambda_min_clipped); quote them so the JSON parses.
    private static readonly Lazy<JsonDocument> CasesLazy = new(() => JsonDocument.Parse(
        System.Text.RegularExpressions.Regex.Replace(File.ReadAllText(Path.Combine(Root, "reference.json")), @"(?<=[:\[,]\s*)(-?Infinity|NaN)(?=\s*[,\]}])", "\"$1\"")));

    private static readonly Lazy<SafetensorsFile> Phase2Lazy = new(() => SafetensorsFile.Open(Path.Combine(Root, "reference-phase2.safetensors")));
    private static readonly Lazy<JsonDocument> Phase2CasesLazy = new(() => JsonDocument.Parse(
        System.Text.RegularExpressions.Regex.Replace(File.ReadAllText(Path.Combine(Root, "reference-phase2.json")), @"(?<=[:\[,]\s*)(-?Infinity|NaN)(?=\s*[,\]}])", "\"$1\"")));

    /// <summary>Where the fixtures are and what their absence means in this run.</summary>
    public static FixtureLocation Location => LocationLazy.Value;

    /// <summary>Whether the fixtures are here (never ends the test).</summary>
    public static bool Available => Location.Root is not null;

    /// <summary>Why the fixtures are missing and where they come from (null when they are here).</summary>
    public static string? MissingReason => Location.Problem;

    /// <summary>The fixtures folder; ends the test as Ignored, i.e. skipped (plain clone) or failed (CI, LATENTDIFFUSION_FIXTURES) without it.</summary>
    public static string Root => Location.RootOrEndTheTest();

    /// <summary>Call first in a test that needs the fixtures but reads them later (or through other code): ends it as <see cref="Root"/> does.</summary>
    public static void Require() => _ = Root;

    /// <summary>A path inside the fixtures folder.</summary>
    public static string PathOf(params string[] parts) => Path.Combine([Root, .. parts]);

    /// <summary>reference.safetensors.</summary>
    public static SafetensorsFile Reference { get { Require(); return ReferenceLazy.Value; } }

    /// <summary>reference.json's cases.</summary>
    public static IEnumerable<JsonElement> Cases { get { Require(); return CasesLazy.Value.RootElement.GetProperty("cases").EnumerateArray(); } }

    /// <summary>An expected tensor from reference.safetensors, as float32 (or its own dtype for integers).</summary>
    public static Tensor Expected(string key) => Reference.Load(key);

    /// <summary>reference-phase2.json's cases (SDXL, inpainting, LoRA, textual inversion; README "Phase 2").</summary>
    public static IEnumerable<JsonElement> Phase2Cases { get { Require(); return Phase2CasesLazy.Value.RootElement.GetProperty("cases").EnumerateArray(); } }

    /// <summary>An expected tensor from reference-phase2.safetensors, as stored.</summary>
    public static Tensor ExpectedPhase2(string key) { Require(); return Phase2Lazy.Value.Load(key); }

    /// <summary>
    /// A <c>TestCaseSource</c> body whose cases come from the fixtures. With the fixtures (or when they are required) it is
    /// <paramref name="read"/>; on a plain clone without them, one ignored case (shown as skipped with
    /// <see cref="MissingReason"/>) built from <paramref name="placeholderArguments"/>, which must fit the test's parameters.
    /// </summary>
    public static IEnumerable<TestCaseData> CaseSource(Func<IEnumerable<TestCaseData>> read, params object?[] placeholderArguments)
        => Location.CasesOrSkip(read, placeholderArguments);

    private static string? FindBesideRepository()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "..", "shared", "fixtures");
            if (File.Exists(Path.Combine(dir.FullName, "LatentDiffusion.sln")) && Directory.Exists(candidate))
                return Path.GetFullPath(candidate);
        }
        return null;
    }
}

/// <summary>Tolerance assertions in the fixtures' own terms.</summary>
public static class AssertTensor
{
    /// <summary>‖actual − expected‖₂ / ‖expected‖₂ ≤ tolerance, shapes equal.</summary>
    public static void RelativeClose(Tensor actual, Tensor expected, double tolerance, string what)
    {
        Assert.That(actual.shape, Is.EqualTo(expected.shape), $"{what}: shape");
        using var scope = NewDisposeScope();
        var a = actual.to(ScalarType.Float64, CPU);
        var e = expected.to(ScalarType.Float64, CPU);
        double rel = (a - e).norm().item<double>() / Math.Max(e.norm().item<double>(), 1e-30);
        Assert.That(rel, Is.LessThanOrEqualTo(tolerance), $"{what}: relative L2 error {rel:E3} > {tolerance:E1}");
    }

    /// <summary>max |actual − expected| ≤ tolerance, shapes equal.</summary>
    public static void MaxAbsClose(Tensor actual, Tensor expected, double tolerance, string what)
    {
        Assert.That(actual.shape, Is.EqualTo(expected.shape), $"{what}: shape");
        using var scope = NewDisposeScope();
        double max = (actual.to(ScalarType.Float64, CPU) - expected.to(ScalarType.Float64, CPU)).abs().max().item<double>();
        Assert.That(max, Is.LessThanOrEqualTo(tolerance), $"{what}: max abs error {max:E3} > {tolerance:E1}");
    }
}
