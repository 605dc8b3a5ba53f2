using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>
/// Finds the stage of a generation that first produced a non-finite value (NaN or infinity), so that a broken model or
/// an absurd setting is an error that names its cause instead of a black picture. Each stage costs one
/// <c>isfinite().all()</c> reduction kept on the device; the flags are read back once, only when the image is bad.
/// </summary>
internal sealed class FiniteChecks : IDisposable
{
    private readonly List<(string Stage, Tensor AllFinite)> _flags = new();

    /// <summary>Remembers whether every value of <paramref name="values"/>, produced by <paramref name="stage"/>, is finite.</summary>
    public void Record(string stage, Tensor values)
    {
        var flag = values.isfinite().all();
        flag.DetachFromDisposeScope();
        _flags.Add((stage, flag));
    }

    /// <summary>
    /// Throws when <paramref name="image"/>, the decoded result, has a non-finite value: the message names the first
    /// recorded stage whose output was not finite, or the VAE decoder when every earlier stage was.
    /// </summary>
    /// <exception cref="InvalidOperationException">The image is not finite.</exception>
    public void ThrowIfImageNotFinite(Tensor image)
    {
        using (var ok = image.isfinite().all())
            if (ok.item<bool>()) return;
        string? first = null;
        if (_flags.Count > 0)
        {
            using var all = stack(_flags.Select(f => f.AllFinite).ToArray()).cpu();
            var values = all.data<bool>().ToArray();
            int index = Array.IndexOf(values, false);
            if (index >= 0) first = _flags[index].Stage;
        }
        first ??= "the VAE decoder (its input latents were finite)";
        throw new InvalidOperationException(
            $"The generated image contains NaN or infinite values; the first non-finite values came from {first}. " +
            "The model's weights may be corrupt or the settings out of range; no image was produced.");
    }

    /// <summary>Releases the flags.</summary>
    public void Dispose()
    {
        foreach (var (_, flag) in _flags) flag.Dispose();
        _flags.Clear();
    }
}
