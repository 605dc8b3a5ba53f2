using LatentDiffusion.Adapters;

namespace LatentDiffusion.Cli;

/// <summary><c>--lora FILE[:scale]</c>, repeatable: the LoRA files to load with the model, checked before it loads.</summary>
internal static class LoraArguments
{
    /// <summary>The LoRAs to load, each under its file name (made unique with -2, -3, ... when two share one); null for none.</summary>
    /// <exception cref="ArgumentException">An argument is not FILE[:scale], or the file (or diffusers LoRA folder) does not exist.</exception>
    public static IReadOnlyList<LoraSource>? Parse(string[]? items)
    {
        if (items is null || items.Length == 0) return null;
        var result = new List<LoraSource>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var item in items)
        {
            LoraSource source;
            try { source = LoraSource.Parse(item); }
            catch (FormatException e) { throw new ArgumentException($"--lora: {e.Message}", e); }
            if (!File.Exists(source.Path) && !Directory.Exists(source.Path))
                throw new ArgumentException($"--lora '{item}': the file '{source.Path}' does not exist.");
            string stem = Path.GetFileNameWithoutExtension(Path.TrimEndingDirectorySeparator(source.Path)), name = stem;
            for (int i = 2; !names.Add(name); i++) name = $"{stem}-{i}";
            result.Add(source with { Name = name });
        }
        return result;
    }
}
