using static TorchSharp.torch;

namespace LatentDiffusion.Formats;

/// <summary>
/// Where one model weight lives on disk: a tensor in a safetensors file, with an optional reshape (for example the
/// single-file checkpoints' 1x1-convolution-shaped attention weights, which the model holds as linear weights).
/// </summary>
/// <param name="File">The open file.</param>
/// <param name="Key">The tensor's name inside the file.</param>
/// <param name="Shape">The shape after <paramref name="Reshape"/>; what the model must expect.</param>
/// <param name="Reshape">Applied after reading, or null.</param>
public sealed record TensorRef(SafetensorsFile File, string Key, long[] Shape, Func<Tensor, Tensor>? Reshape = null)
{
    /// <summary>A reference to a tensor stored under <paramref name="key"/>, as stored.</summary>
    public static TensorRef Direct(SafetensorsFile file, string key) => new(file, key, file.Entries[key].Shape);

    /// <summary>Reads the tensor and converts it to <paramref name="dtype"/> on <paramref name="device"/>.</summary>
    public Tensor Load(ScalarType dtype, Device device)
    {
        var t = File.Load(Key, dtype, device);
        if (Reshape is null) return t;
        using (t) return Reshape(t);
    }

    /// <summary>"key in file", for messages.</summary>
    public override string ToString() => $"'{Key}' in '{File.Path}'";
}
