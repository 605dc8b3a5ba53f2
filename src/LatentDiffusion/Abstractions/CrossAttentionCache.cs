using static TorchSharp.torch;

namespace LatentDiffusion.Abstractions;

/// <summary>
/// The cross-attention keys and values of a text context, kept for as long as one generation uses that context: the
/// context is the same at every denoising step, so each attention layer projects it once per generation instead of once
/// per step. A caller creates one per generation, hands it to every
/// <see cref="IUNet.Forward(Tensor, Tensor, Tensor, CrossAttentionCache?, CancellationToken)"/> call of that generation,
/// and disposes it afterwards; it owns the projections it holds. Entries are matched by the identity of the attention
/// layer and of the context tensor, so a new context tensor is projected anew. Not thread-safe: one per generation.
/// </summary>
public sealed class CrossAttentionCache : IDisposable
{
    private readonly Dictionary<object, List<(Tensor Context, Tensor Key, Tensor Value)>> _entries = new(ReferenceEqualityComparer.Instance);
    private bool _disposed;

    /// <summary>
    /// The keys and values <paramref name="owner"/> (an attention layer) projects from <paramref name="context"/>:
    /// cached ones when this layer has seen this context tensor before, otherwise <paramref name="project"/>'s result,
    /// which the cache then owns (callers must not dispose it).
    /// </summary>
    /// <exception cref="ObjectDisposedException">The cache was disposed.</exception>
    public (Tensor Key, Tensor Value) GetOrAdd(object owner, Tensor context, Func<Tensor, (Tensor Key, Tensor Value)> project)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(owner);
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(project);
        if (!_entries.TryGetValue(owner, out var list)) _entries[owner] = list = new();
        foreach (var e in list)
            if (ReferenceEquals(e.Context, context)) return (e.Key, e.Value);
        var (k, v) = project(context);
        // Owned by the cache, not by the caller's dispose scope.
        k.DetachFromDisposeScope();
        v.DetachFromDisposeScope();
        list.Add((context, k, v));
        return (k, v);
    }

    /// <summary>How many projections the cache holds (one per attention layer and context).</summary>
    public int Count => _entries.Values.Sum(l => l.Count);

    /// <summary>Releases the cached projections.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var (_, k, v) in _entries.Values.SelectMany(l => l)) { k.Dispose(); v.Dispose(); }
        _entries.Clear();
    }
}
