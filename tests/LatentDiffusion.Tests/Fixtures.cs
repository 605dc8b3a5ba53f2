using System.Text.Json;
using LatentDiffusion.Formats;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests;

/// <summary>The reference fixtures in <c>../shared/fixtures</c> (override with LATENTDIFFUSION_FIXTURES). Missing fixtures fail the test, never skip it.</summary>
public static class Fixtures
{
    private static readonly Lazy<string> RootLazy = new(FindRoot);
    private static readonly Lazy<SafetensorsFile> ReferenceLazy = new(() => SafetensorsFile.Open(Path.Combine(Root, "reference.safetensors")));
    // The reference writes Python's bare -Infinity/Infinity/NaN (lambda_min_clipped); quote them so the JSON parses.
    private static readonly Lazy<JsonDocument> CasesLazy = new(() => JsonDocument.Parse(
        System.Text.RegularExpressions.Regex.Replace(File.ReadAllText(Path.Combine(Root, "reference.json")), @"(?<=[:\[,]\s*)(-?Infinity|NaN)(?=\s*[,\]}])", "\"$1\"")));

    /// <summary>The fixtures folder.</summary>
    public static string Root => RootLazy.Value;

    /// <summary>A path inside the fixtures folder.</summary>
    public static string PathOf(params string[] parts) => Path.Combine([Root, .. parts]);

    /// <summary>reference.safetensors.</summary>
    public static SafetensorsFile Reference => ReferenceLazy.Value;

    /// <summary>reference.json's cases.</summary>
    public static IEnumerable<JsonElement> Cases => CasesLazy.Value.RootElement.GetProperty("cases").EnumerateArray();

    /// <summary>An expected tensor from reference.safetensors, as float32 (or its own dtype for integers).</summary>
    public static Tensor Expected(string key) => Reference.Load(key);

    private static string FindRoot()
    {
        var env = Environment.GetEnvironmentVariable("LATENTDIFFUSION_FIXTURES");
        if (!string.IsNullOrEmpty(env))
            return Directory.Exists(env) ? env : throw new DirectoryNotFoundException($"LATENTDIFFUSION_FIXTURES='{env}' does not exist.");
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "..", "shared", "fixtures");
            if (File.Exists(Path.Combine(dir.FullName, "LatentDiffusion.sln")) && Directory.Exists(candidate))
                return Path.GetFullPath(candidate);
        }
        Assert.Fail("The reference fixtures were not found: expected ../shared/fixtures beside the repository root, or LATENTDIFFUSION_FIXTURES.");
        throw new InvalidOperationException();
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
