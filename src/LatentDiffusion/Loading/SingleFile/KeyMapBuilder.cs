using LatentDiffusion.Formats;
using static TorchSharp.torch;

namespace LatentDiffusion.Loading.SingleFile;

/// <summary>
/// Collects one component's weights under their new names while remembering which checkpoint keys were used, so that
/// whatever no component claims can be reported instead of silently dropped.
/// </summary>
internal sealed class KeyMapBuilder(SafetensorsFile file, ISet<string> claimed)
{
    private readonly Dictionary<string, TensorRef> _weights = new(StringComparer.Ordinal);

    public SafetensorsFile File => file;

    public Dictionary<string, TensorRef> Weights => _weights;

    /// <summary>Maps <paramref name="key"/> as stored under <paramref name="name"/>.</summary>
    public void Add(string name, string key) => Add(name, TensorRef.Direct(file, key));

    /// <summary>Maps a stored tensor whose trailing singleton dimensions (1x1 convolution kernels) the model does not have.</summary>
    public void AddAsMatrix(string name, string key)
    {
        var shape = file.Entries[key].Shape;
        if (shape.Length <= 2) { Add(name, key); return; }
        if (shape.Skip(2).Any(d => d != 1))
            throw new InvalidDataException($"Invalid checkpoint '{file.Path}': tensor '{key}' has shape [{string.Join(", ", shape)}]; an attention projection must be [out, in] or [out, in, 1, 1].");
        long rows = shape[0], cols = shape[1];
        Add(name, new TensorRef(file, key, [rows, cols], t => t.reshape(rows, cols)));
    }

    /// <summary>Maps a stored matrix as its transpose (OpenCLIP's <c>text_projection</c> is applied as <c>x @ W</c>, a linear layer's weight as <c>x @ Wᵀ</c>).</summary>
    public void AddTransposed(string name, string key)
    {
        var shape = file.Entries[key].Shape;
        if (shape.Length != 2)
            throw new InvalidDataException($"Invalid checkpoint '{file.Path}': tensor '{key}' has shape [{string.Join(", ", shape)}]; expected a matrix [in, out].");
        Add(name, new TensorRef(file, key, [shape[1], shape[0]], t => t.t().contiguous()));
    }

    /// <summary>Maps one third (<paramref name="part"/> 0, 1, 2 = q, k, v) of a fused in-projection along its first dimension.</summary>
    public void AddSlice(string name, string key, int part, int parts)
    {
        var shape = file.Entries[key].Shape;
        if (shape.Length == 0 || shape[0] % parts != 0)
            throw new InvalidDataException($"Invalid checkpoint '{file.Path}': tensor '{key}' has shape [{string.Join(", ", shape)}]; its first dimension should split into {parts} equal parts.");
        long size = shape[0] / parts, start = part * size;
        long[] sliced = [size, .. shape.Skip(1)];
        // clone(): the slice must not keep the whole fused tensor alive once the caller has copied it.
        Add(name, new TensorRef(file, key, sliced, t => t.narrow(0, start, size).clone()));
    }

    public void Add(string name, TensorRef weight)
    {
        if (_weights.TryGetValue(name, out var existing))
            throw new InvalidDataException($"Invalid checkpoint '{file.Path}': both '{existing.Key}' and '{weight.Key}' map to '{name}'.");
        _weights[name] = weight;
        claimed.Add(weight.Key);
    }
}
