using System.Text.Json;
using System.Text.RegularExpressions;

namespace LatentDiffusion.Cli;

/// <summary>
/// Warnings for prompts and sizes the built-in shapes model was not trained on: it knows only its caption words (an
/// unknown word becomes letter pieces it never saw, and it draws a blob), it always saw a background colour named
/// (without one it may draw the shape on its own colour), and it draws at its native size (at other sizes, two shapes).
/// </summary>
internal static partial class BuiltInModelHints
{
    /// <summary>The words of <paramref name="prompt"/> that are not whole words of the model's vocabulary, in order, once each.</summary>
    public static IReadOnlyList<string> UnknownWords(string prompt, string modelDirectory)
    {
        var vocabulary = Vocabulary(modelDirectory);
        return Words().Matches(prompt.ToLowerInvariant()).Select(m => m.Value)
            .Where(w => w.Length > 1 && !vocabulary.Contains(w + "</w>")).Distinct().ToArray();
    }

    /// <summary>The warning lines for this prompt and size (none when the built-in model will draw what is asked).</summary>
    public static IEnumerable<string> For(string prompt, int width, int height, int nativeSize, string modelDirectory)
    {
        var unknown = UnknownWords(prompt, modelDirectory);
        if (unknown.Count > 0)
            yield return $"the built-in model does not know {string.Join(", ", unknown.Select(w => $"'{w}'"))}: it knows only circle, square, triangle, diamond; red, orange, yellow, green, blue, purple, white, black; small, large; left, right, top, bottom, center; and a background colour (see models/shapes/README.md).";
        else if (!Words().Matches(prompt.ToLowerInvariant()).Any(m => m.Value == "background"))
            yield return "the built-in model was trained on prompts that name a background colour ('a red circle on a blue background'); without one it may draw the shape on a background of its own colour.";
        if (width != nativeSize || height != nativeSize)
            yield return $"the built-in model draws at {nativeSize}x{nativeSize}; at {width}x{height} it tends to draw the shape more than once.";
    }

    private static HashSet<string> Vocabulary(string modelDirectory)
    {
        using var stream = File.OpenRead(Path.Combine(modelDirectory, "tokenizer", "vocab.json"));
        using var json = JsonDocument.Parse(stream);
        return json.RootElement.EnumerateObject().Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
    }

    [GeneratedRegex(@"\p{L}+")]
    private static partial Regex Words();
}
