using System.Text.Json;
using System.Text.RegularExpressions;
using LatentDiffusion.Formats;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests;

/// <summary>
/// The phase-2 reference fixtures (<c>reference-phase2.safetensors</c>, <c>reference-phase2.json</c>) beside the phase-1
/// ones, read the way <see cref="Fixtures"/> reads those: missing fixtures end the test as <see cref="Fixtures.Root"/> does.
/// </summary>
public static class SdxlFixtures
{
    private static readonly Lazy<SafetensorsFile> ReferenceLazy = new(() => SafetensorsFile.Open(Fixtures.PathOf("reference-phase2.safetensors")));
    private static readonly Lazy<JsonDocument> CasesLazy = new(() => JsonDocument.Parse(
        Regex.Replace(File.ReadAllText(Fixtures.PathOf("reference-phase2.json")), @"(?<=[:\[,]\s*)(-?Infinity|NaN)(?=\s*[,\]}])", "\"$1\"")));

    /// <summary>reference-phase2.safetensors.</summary>
    public static SafetensorsFile Reference { get { Fixtures.Require(); return ReferenceLazy.Value; } }

    /// <summary>reference-phase2.json's cases.</summary>
    public static IEnumerable<JsonElement> Cases { get { Fixtures.Require(); return CasesLazy.Value.RootElement.GetProperty("cases").EnumerateArray(); } }

    /// <summary>An expected tensor from reference-phase2.safetensors.</summary>
    public static Tensor Expected(string key) => Reference.Load(key);

    /// <summary>The case of reference-phase2.json with this <c>kind</c> (and <c>key</c>, when given).</summary>
    public static JsonElement Case(string kind, string? key = null)
        => Cases.First(c => c.GetProperty("kind").GetString() == kind && (key is null || (c.TryGetProperty("key", out var k) && k.GetString() == key)));
}
