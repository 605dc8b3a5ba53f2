using System.Text.RegularExpressions;
using LatentDiffusion.Formats;
using static TorchSharp.torch;

namespace LatentDiffusion.Vae;

public sealed partial class AutoencoderKL
{
    /// <summary>
    /// Loads a diffusers <c>vae</c> folder: <c>config.json</c> and <paramref name="weightsFile"/> (default
    /// <see cref="DefaultWeightsFile"/>, else <see cref="Fp16WeightsFile"/>). Files in both the current and the legacy
    /// attention naming load. The weights are converted to <paramref name="dtype"/> on <paramref name="device"/> as they are read.
    /// </summary>
    /// <param name="vaeDir">The folder.</param>
    /// <param name="device">Where the weights go.</param>
    /// <param name="dtype">What they are held in.</param>
    /// <param name="weightsFile">A weights file name inside the folder (or a full path), or null for the default.</param>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">The config or the weights file is missing.</exception>
    /// <exception cref="NotSupportedException">The config asks for something not implemented.</exception>
    /// <exception cref="InvalidDataException">The config is malformed, or a tensor is missing, unexpected or of the wrong shape.</exception>
    public static AutoencoderKL Load(string vaeDir, Device device, ScalarType dtype, string? weightsFile = null)
    {
        if (!Directory.Exists(vaeDir)) throw new DirectoryNotFoundException($"VAE folder not found: {vaeDir}");
        var config = AutoencoderKLConfig.Load(Path.Combine(vaeDir, "config.json"));
        string path = ResolveWeights(vaeDir, weightsFile);
        using var file = SafetensorsFile.Open(path);
        return Load(config, WeightMap(file), device, dtype, $"vae (AutoencoderKL) from '{vaeDir}'");
    }

    /// <summary>
    /// Builds the model and loads it from weights already named as this model names them (current diffusers names, linear
    /// attention weights), for example by the single-file checkpoint loader.
    /// </summary>
    /// <param name="config">The architecture.</param>
    /// <param name="weights">Every parameter, by its diffusers name.</param>
    /// <param name="device">Where the weights go.</param>
    /// <param name="dtype">What they are held in.</param>
    /// <param name="component">What is loaded, for error messages.</param>
    /// <exception cref="InvalidDataException">A tensor is missing, unexpected or of the wrong shape; the message names it.</exception>
    public static AutoencoderKL Load(AutoencoderKLConfig config, IReadOnlyDictionary<string, TensorRef> weights, Device device, ScalarType dtype,
        string component = "vae (AutoencoderKL)")
    {
        ArgumentNullException.ThrowIfNull(weights);
        // Names and shapes are checked against the config before the model is allocated.
        var model = WeightLoader.BuildChecked(d => new AutoencoderKL(config, d, dtype), device, weights, component);
        model.eval();
        return model;
    }

    /// <summary>As <see cref="Load(AutoencoderKLConfig, IReadOnlyDictionary{string, TensorRef}, Device, ScalarType, string)"/> for weights that <see cref="CheckWeights"/> has accepted.</summary>
    internal static AutoencoderKL LoadPrechecked(AutoencoderKLConfig config, IReadOnlyDictionary<string, TensorRef> weights, Device device, ScalarType dtype, string component)
    {
        var model = WeightLoader.BuildPrechecked(d => new AutoencoderKL(config, d, dtype), device, weights, component);
        model.eval();
        return model;
    }

    /// <summary>Checks that <paramref name="weights"/> fit the model <paramref name="config"/> describes, building only its skeleton on the <c>meta</c> device.</summary>
    /// <exception cref="InvalidDataException">A weight is missing, unexpected, of the wrong shape or not floating-point.</exception>
    internal static void CheckWeights(AutoencoderKLConfig config, IReadOnlyDictionary<string, TensorRef> weights, string component)
    {
        using var skeleton = new AutoencoderKL(config, new Device(TorchSharp.DeviceType.META), ScalarType.Float32);
        WeightLoader.Check(skeleton, weights, component);
    }

    /// <summary>
    /// The tensors of a diffusers VAE file by the names this model uses: legacy mid-block attention names
    /// (<c>query</c>, <c>key</c>, <c>value</c>, <c>proj_attn</c>) become <c>to_q</c>, <c>to_k</c>, <c>to_v</c>, <c>to_out.0</c>,
    /// as the reference renames them on loading; every other name is kept.
    /// </summary>
    /// <exception cref="InvalidDataException">The file holds a tensor under both its legacy and its current name.</exception>
    public static IReadOnlyDictionary<string, TensorRef> WeightMap(SafetensorsFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        var map = new Dictionary<string, TensorRef>(StringComparer.Ordinal);
        var from = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var key in file.Entries.Keys.OrderBy(k => k, StringComparer.Ordinal))
        {
            string name = CurrentName(key);
            if (from.TryGetValue(name, out var other))
                throw new InvalidDataException($"'{file.Path}' holds both '{other}' and '{key}', which are the same weight ('{name}') in the legacy and current naming.");
            from[name] = key;
            map[name] = TensorRef.Direct(file, key);
        }
        return map;
    }

    /// <summary>A diffusers VAE tensor name in the current naming (legacy attention names renamed, others unchanged).</summary>
    public static string CurrentName(string name)
    {
        var m = LegacyAttentionName().Match(name);
        if (!m.Success) return name;
        string current = m.Groups["old"].Value switch
        {
            "query" => "to_q",
            "key" => "to_k",
            "value" => "to_v",
            _ => "to_out.0",
        };
        return $"{m.Groups["block"].Value}{current}.{m.Groups["kind"].Value}";
    }

    // Only the autoencoder's mid-block attentions ever carried the old names.
    [GeneratedRegex(@"^(?<block>(?:encoder|decoder)\.mid_block\.attentions\.\d+\.)(?<old>query|key|value|proj_attn)\.(?<kind>weight|bias)$", RegexOptions.CultureInvariant)]
    private static partial Regex LegacyAttentionName();

    private static string ResolveWeights(string vaeDir, string? weightsFile)
    {
        if (weightsFile is not null)
        {
            string path = Path.Combine(vaeDir, weightsFile);
            return File.Exists(path) ? path : throw new FileNotFoundException($"VAE weights not found: {path}", path);
        }
        foreach (var name in new[] { DefaultWeightsFile, Fp16WeightsFile })
        {
            string path = Path.Combine(vaeDir, name);
            if (File.Exists(path)) return path;
        }
        throw new FileNotFoundException(
            $"No VAE weights in '{vaeDir}': expected '{DefaultWeightsFile}' or '{Fp16WeightsFile}' (PyTorch .bin files are not read; convert them to safetensors).",
            Path.Combine(vaeDir, DefaultWeightsFile));
    }
}
