using static TorchSharp.torch;

namespace LatentDiffusion.Layers;

/// <summary>
/// Keeps the cross-attention keys and values of a text context for as long as a generation uses that context: the
/// context is the same at every denoising step, so each <see cref="Attention"/> projects it once per generation instead
/// of once per step. A cache is active on the thread that began it until disposed (generations on other threads have
/// their own); it matches contexts by tensor identity and owns the projections it holds.
/// </summary>
public sealed class CrossAttentionCache : IDisposable
{
    [ThreadStatic] private static CrossAttentionCache? _current;

    private readonly CrossAttentionCache? _previous;
    private readonly Dictionary<Attention, List<(Tensor Context, Tensor Key, Tensor Value)>> _entries = new(ReferenceEqualityComparer.Instance);
    private bool _disposed;

    private CrossAttentionCache(CrossAttentionCache? previous) => _previous = previous;

    /// <summary>Starts caching on this thread; dispose to stop and release the cached tensors.</summary>
    public static CrossAttentionCache Begin() => _current = new CrossAttentionCache(_current);

    internal static CrossAttentionCache? Current => _current;

    internal (Tensor Key, Tensor Value) GetOrAdd(Attention module, Tensor context, Func<Tensor, (Tensor, Tensor)> project)
    {
        if (!_entries.TryGetValue(module, out var list)) _entries[module] = list = new();
        foreach (var e in list)
            if (ReferenceEquals(e.Context, context)) return (e.Key, e.Value);
        var (k, v) = project(context);
        // Owned by the cache, not by the step's dispose scope.
        k.DetachFromDisposeScope();
        v.DetachFromDisposeScope();
        list.Add((context, k, v));
        return (k, v);
    }

    /// <summary>Stops caching and releases the cached projections.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (ReferenceEquals(_current, this)) _current = _previous;
        foreach (var (_, k, v) in _entries.Values.SelectMany(l => l)) { k.Dispose(); v.Dispose(); }
        _entries.Clear();
    }
}
