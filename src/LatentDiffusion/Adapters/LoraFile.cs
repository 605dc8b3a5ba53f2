using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Adapters;

/// <summary>
/// A LoRA file read and checked on its own, before it meets a model: every tensor named, each module with a down and an
/// up projection of matching rank and a finite alpha. Which model modules the names denote is decided when the file is
/// loaded into a pipeline (<see cref="LoraAdapters.Load(string, string?, double)"/>), against the model's own module tree.
/// </summary>
/// <remarks>
/// Read in both formats people download (<see cref="LoraFormat"/>). LyCORIS variants other than LoCon (LoHa, LoKr, DoRA,
/// Tucker-decomposed convolutions, full diffs) are refused with <see cref="NotSupportedException"/> naming the tensor;
/// any other unknown tensor is an <see cref="InvalidDataException"/>: nothing is skipped silently.
/// </remarks>
public sealed class LoraFile : IDisposable
{
    private static readonly (string Prefix, string Component)[] KohyaPrefixes =
    [
        ("lora_unet_", "unet"), ("lora_te1_", "text_encoder"), ("lora_te2_", "text_encoder_2"), ("lora_te_", "text_encoder"),
    ];

    private static readonly string[] PeftComponents = ["unet", "text_encoder", "text_encoder_2"];

    // Suffixes of kohya names (after the first dot) and of PEFT names (after the module path): which part each tensor is.
    private static readonly (string Suffix, Part Part)[] KohyaSuffixes =
        [(".lora_down.weight", Part.Down), (".lora_up.weight", Part.Up), (".alpha", Part.Alpha)];

    private static readonly (string Suffix, Part Part)[] PeftSuffixes =
    [
        (".lora_A.weight", Part.Down), (".lora_B.weight", Part.Up), (".lora.down.weight", Part.Down), (".lora.up.weight", Part.Up),
        (".lora_linear_layer.down.weight", Part.Down), (".lora_linear_layer.up.weight", Part.Up), (".alpha", Part.Alpha),
    ];

    // Tensors of LoRA variants this library does not compute, by the name part that gives them away ($: at the end).
    private static readonly (string Marker, string Kind)[] Unsupported =
    [
        ("hada_w", "LoHa (LyCORIS)"), ("hada_t", "LoHa (LyCORIS)"), ("lokr_", "LoKr (LyCORIS)"), ("dora_scale", "DoRA"),
        ("lora_magnitude_vector", "DoRA"), (".lora_mid.", "LoCon with a Tucker-decomposed convolution (lora_mid)"),
        (".diff$", "a full weight difference (LyCORIS 'full')"), (".diff_b$", "a full bias difference (LyCORIS 'full')"),
        ("lora_embedding_", "an embedding LoRA"), (".lora_A.bias", "a LoRA with biases"), (".lora_B.bias", "a LoRA with biases"),
    ];

    /// <summary>The file name diffusers' training scripts save a LoRA under, read when a folder is given.</summary>
    public const string DiffusersWeightsName = "pytorch_lora_weights.safetensors";

    private enum Part { Down, Up, Alpha }

    private readonly List<LoraModule> _modules;
    private bool _disposed;

    private LoraFile(string path, LoraFormat format, IReadOnlyDictionary<string, string> metadata, List<LoraModule> modules)
    {
        Path = path;
        Format = format;
        Metadata = metadata;
        _modules = modules;
    }

    /// <summary>The file read.</summary>
    public string Path { get; }

    /// <summary>How its tensors are named (kohya when it has any kohya name).</summary>
    public LoraFormat Format { get; }

    /// <summary>The safetensors metadata (kohya's <c>ss_*</c> training settings, <c>modelspec.*</c>).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>The number of modules the file updates.</summary>
    public int ModuleCount => _modules.Count;

    /// <summary>The module names as the file spells them (<c>lora_unet_..._to_q</c>, <c>unet.down_blocks...to_q</c>).</summary>
    public IReadOnlyList<string> ModuleNames => _modules.Select(m => m.Key).ToList();

    /// <summary>The modules, float32 on the CPU; owned by this file.</summary>
    internal IReadOnlyList<LoraModule> Modules
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _modules;
        }
    }

    /// <summary>
    /// Reads and checks a LoRA <c>.safetensors</c> file (kohya/A1111 or diffusers/PEFT names), or the
    /// <see cref="DiffusersWeightsName"/> inside a folder.
    /// </summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is corrupt, holds tensors that are not LoRA weights, a module lacks
    /// its down or up projection, their ranks or shapes disagree, a value is not finite, or alpha is not one finite number.
    /// The message names the tensors.</exception>
    /// <exception cref="NotSupportedException">The file is a LoRA variant this library does not compute (LoHa, LoKr, DoRA, ...).</exception>
    public static LoraFile Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Directory.Exists(path))
        {
            // A diffusers LoRA folder, as load_lora_weights takes it.
            string inside = System.IO.Path.Combine(path, DiffusersWeightsName);
            if (!File.Exists(inside))
                throw new FileNotFoundException($"LoRA folder '{path}' has no {DiffusersWeightsName}; give the LoRA's .safetensors file.", inside);
            path = inside;
        }
        if (!File.Exists(path))
            throw new FileNotFoundException($"LoRA file not found: '{path}'.", path);
        using var file = SafetensorsFile.Open(path);
        var parts = new Dictionary<(string Component, string Name, bool Dotted), Dictionary<Part, string>>();
        var unknown = new List<string>();
        bool anyKohya = false;
        foreach (var key in file.Entries.Keys.Order(StringComparer.Ordinal))
        {
            if (!TryClassify(key, out var component, out var name, out var dotted, out var part))
            {
                var unsupported = Unsupported.FirstOrDefault(u => u.Marker.EndsWith('$')
                    ? key.EndsWith(u.Marker[..^1], StringComparison.Ordinal)
                    : key.Contains(u.Marker, StringComparison.Ordinal));
                if (unsupported.Marker is not null)
                    throw new NotSupportedException($"LoRA file '{path}': tensor '{key}' belongs to {unsupported.Kind}, which this library does not apply " +
                        "(supported: LoRA and LoCon in the kohya/A1111 and diffusers/PEFT formats).");
                unknown.Add(key);
                continue;
            }
            anyKohya |= !dotted;
            var id = (component, name, dotted);
            if (!parts.TryGetValue(id, out var byPart)) parts[id] = byPart = [];
            if (!byPart.TryAdd(part, key))
                throw new InvalidDataException($"LoRA file '{path}': tensors '{byPart[part]}' and '{key}' are both the {part.ToString().ToLowerInvariant()} of one module.");
        }
        if (unknown.Count > 0)
            throw new InvalidDataException($"LoRA file '{path}': {unknown.Count} tensor(s) are not LoRA weights of a known format: {Sample(unknown)}. " +
                "Expected kohya names (lora_unet_*, lora_te_*, lora_te1_*, lora_te2_* with .lora_down.weight, .lora_up.weight, .alpha) " +
                "or diffusers/PEFT names (unet.*, text_encoder.*, text_encoder_2.* with .lora_A.weight, .lora_B.weight).");
        if (parts.Count == 0)
            throw new InvalidDataException($"LoRA file '{path}' holds no LoRA tensors.");

        var modules = new List<LoraModule>();
        try
        {
            foreach (var ((component, name, dotted), byPart) in parts)
                modules.Add(ReadModule(file, path, component, name, dotted, byPart));
        }
        catch
        {
            foreach (var m in modules) m.Dispose();
            throw;
        }
        return new LoraFile(path, anyKohya ? LoraFormat.Kohya : LoraFormat.Peft, file.Metadata, modules);
    }

    private static bool TryClassify(string key, out string component, out string name, out bool dotted, out Part part)
    {
        foreach (var (prefix, comp) in KohyaPrefixes)
        {
            if (!key.StartsWith(prefix, StringComparison.Ordinal)) continue;
            int dot = key.IndexOf('.', StringComparison.Ordinal);
            if (dot < 0) break;
            var suffix = KohyaSuffixes.FirstOrDefault(s => key.Length - dot == s.Suffix.Length && key.EndsWith(s.Suffix, StringComparison.Ordinal));
            if (suffix.Suffix is null) break;
            (component, name, dotted, part) = (comp, key[prefix.Length..dot], false, suffix.Part);
            return name.Length > 0;
        }
        foreach (var comp in PeftComponents)
        {
            if (!key.StartsWith(comp + ".", StringComparison.Ordinal)) continue;
            var suffix = PeftSuffixes.FirstOrDefault(s => key.EndsWith(s.Suffix, StringComparison.Ordinal));
            if (suffix.Suffix is null) break;
            string path = key[(comp.Length + 1)..^suffix.Suffix.Length];
            // The attention-processor layout of older diffusers files: attn1.processor.to_q_lora.down.weight.
            if (path.Contains(".processor.", StringComparison.Ordinal) && path.EndsWith("_lora", StringComparison.Ordinal))
            {
                path = path.Replace(".processor.", ".", StringComparison.Ordinal)[..^"_lora".Length];
                if (path.EndsWith(".to_out", StringComparison.Ordinal)) path += ".0";
            }
            (component, name, dotted, part) = (comp, path, true, suffix.Part);
            return path.Length > 0;
        }
        (component, name, dotted, part) = ("", "", false, default);
        return false;
    }

    private static LoraModule ReadModule(SafetensorsFile file, string path, string component, string name, bool dotted, Dictionary<Part, string> byPart)
    {
        string label = byPart.Values.Order(StringComparer.Ordinal).First();
        label = dotted ? $"{component}.{name}" : label[..label.IndexOf('.', StringComparison.Ordinal)];
        if (!byPart.TryGetValue(Part.Down, out var downKey) || !byPart.TryGetValue(Part.Up, out var upKey))
        {
            string missing = byPart.ContainsKey(Part.Down) ? "up (lora_up / lora_B)" : "down (lora_down / lora_A)";
            throw new InvalidDataException($"LoRA file '{path}': module '{label}' has no {missing} projection (found: {string.Join(", ", byPart.Values)}).");
        }
        Tensor? down = null, up = null;
        try
        {
            down = LoadFloat(file, path, downKey);
            up = LoadFloat(file, path, upKey);
            if (down.dim() is not (2 or 4))
                throw new InvalidDataException($"LoRA file '{path}': '{downKey}' has shape {Shape(down)}; a down projection is [rank, in] or [rank, in, kh, kw].");
            if (up.dim() is not (2 or 4) || (up.dim() == 4 && (up.shape[2] != 1 || up.shape[3] != 1)))
                throw new InvalidDataException($"LoRA file '{path}': '{upKey}' has shape {Shape(up)}; an up projection is [out, rank] or [out, rank, 1, 1].");
            if (down.shape[0] < 1 || up.shape[1] != down.shape[0])
                throw new InvalidDataException($"LoRA file '{path}': module '{label}': the down projection has rank {down.shape[0]} ({Shape(down)}) " +
                    $"but the up projection takes {up.shape[1]} ({Shape(up)}); they must agree.");
            double alpha = down.shape[0];
            if (byPart.TryGetValue(Part.Alpha, out var alphaKey))
            {
                using var a = LoadFloat(file, path, alphaKey, checkFinite: false);
                if (a.numel() != 1)
                    throw new InvalidDataException($"LoRA file '{path}': '{alphaKey}' has shape {Shape(a)}; alpha is one number.");
                alpha = a.to(ScalarType.Float64).item<double>();
                if (!double.IsFinite(alpha))
                    throw new InvalidDataException($"LoRA file '{path}': '{alphaKey}' is {alpha}; alpha must be a finite number.");
            }
            return new LoraModule(label, component, name, dotted, down, up, alpha);
        }
        catch
        {
            down?.Dispose();
            up?.Dispose();
            throw;
        }
    }

    private static Tensor LoadFloat(SafetensorsFile file, string path, string key, bool checkFinite = true)
    {
        var entry = file.Entries[key];
        if (entry.ScalarType is not (ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float32 or ScalarType.Float64))
            throw new InvalidDataException($"LoRA file '{path}': '{key}' is {entry.DType}; LoRA weights are floating point.");
        var t = file.Load(key, ScalarType.Float32);
        if (checkFinite && !t.isfinite().all().item<bool>())
        {
            t.Dispose();
            throw new InvalidDataException($"LoRA file '{path}': '{key}' holds NaN or infinite values.");
        }
        return t;
    }

    private static string Shape(Tensor t) => $"[{string.Join(", ", t.shape)}]";

    private static string Sample(List<string> names)
        => string.Join(", ", names.Take(8).Select(n => $"'{n}'")) + (names.Count > 8 ? $" and {names.Count - 8} more" : "");

    /// <summary>Frees the tensors.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var m in _modules) m.Dispose();
    }
}
