using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Formats;

/// <summary>Copies weights named as the reference names them into a module's parameters and buffers, checking names and shapes.</summary>
public static class WeightLoader
{
    /// <summary>
    /// Loads every parameter and buffer of <paramref name="module"/> from <paramref name="weights"/> (keys are the module's own
    /// names), converting each tensor to the parameter's dtype and device as it is read, so the model is never held twice.
    /// </summary>
    /// <param name="module">The model, already on its device and dtype.</param>
    /// <param name="weights">The tensors available, by the module's names.</param>
    /// <param name="component">What is being loaded, for messages (for example "unet from 'models/sd/unet'").</param>
    /// <param name="ignoredExtras">Names in <paramref name="weights"/> that the module may lack without error (for example <c>position_ids</c>).</param>
    /// <param name="optionalBuffers">Module buffers that may be absent from <paramref name="weights"/> (they keep their computed value).</param>
    /// <exception cref="InvalidDataException">A tensor is missing, unexpected, or of the wrong shape; the message names the file, the tensor, expected and actual.</exception>
    public static void Load(nn.Module module, IReadOnlyDictionary<string, TensorRef> weights, string component,
        IEnumerable<string>? ignoredExtras = null, IEnumerable<string>? optionalBuffers = null)
    {
        var targets = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, p) in module.named_parameters()) targets[name] = p;
        var optional = new HashSet<string>(optionalBuffers ?? [], StringComparer.Ordinal);
        foreach (var (name, b) in module.named_buffers()) targets[name] = b;

        var missing = targets.Keys.Where(k => !weights.ContainsKey(k) && !optional.Contains(k)).OrderBy(k => k, StringComparer.Ordinal).ToList();
        var ignored = new HashSet<string>(ignoredExtras ?? [], StringComparer.Ordinal);
        var unexpected = weights.Keys.Where(k => !targets.ContainsKey(k) && !ignored.Contains(k)).OrderBy(k => k, StringComparer.Ordinal).ToList();
        if (missing.Count > 0 || unexpected.Count > 0)
        {
            var parts = new List<string>();
            string where = weights.Values.Select(w => w.File.Path).Distinct().FirstOrDefault() ?? "(no file)";
            if (missing.Count > 0) parts.Add($"{missing.Count} tensor(s) missing from '{where}': {Sample(missing)}");
            if (unexpected.Count > 0) parts.Add($"{unexpected.Count} unexpected tensor(s) in '{where}' that the configured architecture has no place for: {Sample(unexpected)}");
            throw new InvalidDataException($"Cannot load {component}: {string.Join("; ", parts)}. Does the config.json match the weights?");
        }

        using var noGrad = no_grad();
        foreach (var (name, target) in targets)
        {
            if (!weights.TryGetValue(name, out var source)) continue;
            if (!source.Shape.SequenceEqual(target.shape))
                throw new InvalidDataException($"Cannot load {component}: tensor {source} has shape [{string.Join(", ", source.Shape)}] but the configured model expects '{name}' to be [{string.Join(", ", target.shape)}].");
            using var value = source.Load(target.dtype, target.device);
            target.copy_(value);
        }
    }

    private static string Sample(List<string> names) => string.Join(", ", names.Take(8)) + (names.Count > 8 ? $", ... ({names.Count - 8} more)" : "");
}
