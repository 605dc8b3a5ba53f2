using System.Text.Json;
using System.Text.RegularExpressions;

namespace LatentDiffusion.Tests.Text;

/// <summary>The text-encoder cases of reference.json.</summary>
internal static class TextFixtures
{
    /// <summary>
    /// The prompts of the "components" case of <paramref name="variant"/> (sd15, sd2v). reference.json was written by
    /// Python and holds bare <c>-Infinity</c> / <c>NaN</c> numbers, which System.Text.Json refuses; they are quoted first.
    /// </summary>
    public static string[] Prompts(string variant)
    {
        string text = Regex.Replace(File.ReadAllText(Fixtures.PathOf("reference.json")), @"(?<=[:\[,]\s*)(-?Infinity|NaN)(?=\s*[,\]\}])", "\"$1\"");
        using var doc = JsonDocument.Parse(text);
        var c = doc.RootElement.GetProperty("cases").EnumerateArray()
            .First(c => c.GetProperty("kind").GetString() == "components" && c.GetProperty("model").GetString() == $"tiny-{variant}");
        return c.GetProperty("prompts").EnumerateArray().Select(p => p.GetString()!).ToArray();
    }
}
