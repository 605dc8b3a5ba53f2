using System.Text.Json;
using System.Text.RegularExpressions;

namespace LatentDiffusion.Hub;

/// <summary>
/// The files of a diffusers repository that a pipeline needs: <c>model_index.json</c>, and in the folder of each
/// component it names, the configs, the tokenizer files and one set of <c>.safetensors</c> weights (never pickled
/// <c>.bin</c>/<c>.ckpt</c>/<c>.pt</c>, nor <c>.onnx</c>/<c>.msgpack</c>). The safety checker and the feature extractor
/// are skipped: the pipelines of this library do not use them. Files at the top (e.g. single-file checkpoints) are skipped.
/// </summary>
internal static partial class HubFileSelection
{
    /// <summary>The pipeline's description, fetched first.</summary>
    public const string ModelIndex = "model_index.json";

    private static readonly HashSet<string> Unused = ["safety_checker", "feature_extractor"];

    private static readonly HashSet<string> SmallFiles =
    [
        "config.json", "scheduler_config.json",
        "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    ];

    [GeneratedRegex(@"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")]
    private static partial Regex SafeName();

    /// <summary>The components named in <c>model_index.json</c> (keys not starting with '_' whose value is a [library, class] pair), unused ones left out.</summary>
    public static List<string> Components(string modelIndexJson, string repoId)
    {
        try
        {
            using var doc = JsonDocument.Parse(modelIndexJson);
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"{ModelIndex} of '{repoId}' is not a JSON object.");
            var components = new List<string>();
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                if (p.Name.StartsWith('_') || p.Value.ValueKind != JsonValueKind.Array || p.Value.GetArrayLength() != 2) continue;
                if (p.Value.EnumerateArray().Any(v => v.ValueKind != JsonValueKind.String)) continue; // [null, null]: not present
                if (Unused.Contains(p.Name)) continue;
                if (!SafeName().IsMatch(p.Name) || p.Name.Contains(".."))
                    throw new InvalidDataException($"{ModelIndex} of '{repoId}' names a component '{p.Name}' that is not a plain folder name.");
                components.Add(p.Name);
            }
            return components;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{ModelIndex} of '{repoId}' is not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>
    /// The files to fetch among <paramref name="files"/> (the repository's listing), <c>model_index.json</c> first.
    /// Per component: the weights of <paramref name="variant"/> when asked and present, else the plain weights, else the
    /// fp16 ones.
    /// </summary>
    /// <exception cref="NotSupportedException">A component has weights, but none in .safetensors.</exception>
    public static List<HubFile> Select(IReadOnlyList<HubFile> files, IReadOnlyList<string> components, string? variant, string repoId)
    {
        var selected = files.Where(f => f.Path == ModelIndex).ToList();
        foreach (var component in components)
        {
            var inFolder = files
                .Where(f => f.Path.StartsWith(component + "/", StringComparison.Ordinal))
                .Select(f => (File: f, Name: f.Path[(component.Length + 1)..]))
                .Where(x => !x.Name.Contains('/') && !x.Name.Contains('\\') && SafeName().IsMatch(x.Name))
                .ToList();
            selected.AddRange(inFolder.Where(x => SmallFiles.Contains(x.Name)).Select(x => x.File));
            var weights = inFolder.Where(x => x.Name.EndsWith(".safetensors", StringComparison.Ordinal))
                .GroupBy(x => VariantOf(x.Name)).ToDictionary(g => g.Key, g => g.Select(x => x.File).ToList());
            List<HubFile>? chosen = null;
            if (variant is not null) weights.TryGetValue(variant, out chosen);
            if (chosen is null) weights.TryGetValue("", out chosen);
            if (chosen is null) weights.TryGetValue("fp16", out chosen);
            if (chosen is not null) selected.AddRange(chosen);
            else if (inFolder.FirstOrDefault(x => IsOtherWeights(x.Name)) is { File: not null } other)
                throw new NotSupportedException($"Component '{component}' of '{repoId}' has no .safetensors weights (only '{other.Name}'); this library loads .safetensors only.");
        }
        return selected;
    }

    /// <summary>
    /// The variant of a weights file: "" for <c>model.safetensors</c>, <c>fp16</c> for <c>model.fp16.safetensors</c>
    /// (and for shards, <c>model.fp16-00001-of-00002.safetensors</c>).
    /// </summary>
    public static string VariantOf(string fileName)
    {
        string stem = fileName[..^".safetensors".Length];
        stem = ShardSuffix().Replace(stem, "");
        int dot = stem.LastIndexOf('.');
        return dot < 0 ? "" : stem[(dot + 1)..];
    }

    [GeneratedRegex(@"-\d{5}-of-\d{5}$")]
    private static partial Regex ShardSuffix();

    private static bool IsOtherWeights(string name)
        => name.EndsWith(".bin", StringComparison.Ordinal) || name.EndsWith(".ckpt", StringComparison.Ordinal)
           || name.EndsWith(".pt", StringComparison.Ordinal) || name.EndsWith(".pth", StringComparison.Ordinal)
           || name.EndsWith(".onnx", StringComparison.Ordinal) || name.EndsWith(".msgpack", StringComparison.Ordinal);
}
