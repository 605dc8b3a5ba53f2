using LatentDiffusion.Formats;
using LatentDiffusion.Loading.SingleFile;
using LatentDiffusion.Vae;
using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>A standalone VAE file in place of the model's VAE (<see cref="PipelineOptions.VaeFile"/>).</summary>
internal static partial class ModelLoader
{
    /// <summary>
    /// Loads the VAE weights of <paramref name="path"/> into a VAE of the model's <paramref name="config"/>: diffusers
    /// names as they are, the original layout through <see cref="VaeKeyMap"/>.
    /// </summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="InvalidDataException">It is not a VAE of this shape (the message names the tensor).</exception>
    private static AutoencoderKL LoadVaeFile(string path, AutoencoderKLConfig config, Device device, ScalarType dtype)
    {
        path = Path.GetFullPath(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"VAE file not found: '{path}'.", path);
        using var file = SafetensorsFile.Open(path);
        var weights = StandaloneVaeWeights(file);
        string component = $"vae from the VAE file '{path}'";
        AutoencoderKL.CheckWeights(config, weights, component);
        return AutoencoderKL.Load(config, weights, device, dtype, component);
    }

    /// <summary>The weights of a standalone VAE file under the current diffusers names.</summary>
    internal static IReadOnlyDictionary<string, TensorRef> StandaloneVaeWeights(SafetensorsFile file)
    {
        var keys = file.Entries.Keys;
        if (keys.Any(k => k.StartsWith(UNetKeyMap.Prefix, StringComparison.Ordinal)))
            throw new InvalidDataException($"'{file.Path}' is a whole single-file checkpoint (it has '{UNetKeyMap.Prefix}*' tensors), not a VAE file.");
        var claimed = new HashSet<string>(StringComparer.Ordinal);
        if (keys.Any(k => k.StartsWith(VaeKeyMap.Prefix, StringComparison.Ordinal))) return VaeKeyMap.Map(file, claimed);
        if (keys.Any(k => k.StartsWith("encoder.down.", StringComparison.Ordinal) || k.StartsWith("decoder.up.", StringComparison.Ordinal)))
            return VaeKeyMap.Map(file, claimed, prefix: "");
        return AutoencoderKL.WeightMap(file);
    }
}
