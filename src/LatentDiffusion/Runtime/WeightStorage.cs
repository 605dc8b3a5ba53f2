using static TorchSharp.torch;

namespace LatentDiffusion.Runtime;

/// <summary>
/// The dtype in which the model parts built on this thread hold their linear and convolution weights when it differs from
/// the dtype they compute in (<c>PipelineOptions.WeightDType</c>): float16 weights computed in float32 take half the memory
/// of float32 weights and give float32's results. Null (the default): weights are held in the compute dtype.
/// </summary>
internal static class WeightStorage
{
    [ThreadStatic] private static ScalarType? t_dtype;

    /// <summary>The storage dtype of the current scope on this thread; null outside any.</summary>
    public static ScalarType? DType => t_dtype;

    /// <summary>Until the returned scope is disposed, parts built on this thread hold their weights in <paramref name="dtype"/> (null: their compute dtype).</summary>
    public static Scope Use(ScalarType? dtype)
    {
        var previous = t_dtype;
        t_dtype = dtype;
        return new Scope(previous);
    }

    /// <summary>Restores the storage dtype of the enclosing scope.</summary>
    public readonly struct Scope(ScalarType? previous) : IDisposable
    {
        /// <summary>Ends the scope.</summary>
        public void Dispose() => t_dtype = previous;
    }
}
