using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.UNet;

/// <summary>
/// Multi-head scaled dot-product attention over token sequences: self-attention when no context is given,
/// cross-attention to a context (the text encoder's hidden states) otherwise.
/// </summary>
/// <remarks>
/// The key/value projection (<see cref="ProjectKeyValue"/>) is separate from the attention itself
/// (<see cref="Attend"/>) so that a caller can compute the cross-attention keys and values of a fixed text context
/// once and reuse them for every denoising step.
/// </remarks>
public sealed class Attention : nn.Module<Tensor, Tensor?, Tensor>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    private readonly Linear _toQ;
    private readonly Linear _toK;
    private readonly Linear _toV;
    private readonly Linear _toOut;

    /// <summary>Number of heads.</summary>
    public int Heads { get; }

    /// <summary>Width of each head.</summary>
    public int HeadDim { get; }

    /// <summary>True when the keys and values come from a context of another width than the queries.</summary>
    public bool IsCrossAttention { get; }

    /// <summary>
    /// Compute attention in float32 when the tensors are float16 or bfloat16 (<c>upcast_attention</c>), so that the
    /// scores of models trained that way (Stable Diffusion 2.x) do not overflow. No effect in float32.
    /// </summary>
    public bool UpcastAttention { get; set; }

    /// <summary>Creates the projections.</summary>
    /// <param name="queryDim">Width of the attending tokens.</param>
    /// <param name="crossAttentionDim">Width of the context, or null for self-attention.</param>
    /// <param name="heads">Number of heads.</param>
    /// <param name="headDim">Width of each head.</param>
    /// <param name="bias">Biases on the query, key and value projections.</param>
    /// <param name="upcastAttention">See <see cref="UpcastAttention"/>.</param>
    /// <param name="device">Where the weights live.</param>
    /// <param name="dtype">The weights' dtype.</param>
    public Attention(int queryDim, int? crossAttentionDim, int heads, int headDim, bool bias, bool upcastAttention, Device device, ScalarType dtype)
        : base(nameof(Attention))
    {
        Heads = heads;
        HeadDim = headDim;
        IsCrossAttention = crossAttentionDim is not null;
        UpcastAttention = upcastAttention;
        int inner = heads * headDim;
        int contextDim = crossAttentionDim ?? queryDim;
        _toQ = nn.Linear(queryDim, inner, hasBias: bias, device: device, dtype: dtype);
        _toK = nn.Linear(contextDim, inner, hasBias: bias, device: device, dtype: dtype);
        _toV = nn.Linear(contextDim, inner, hasBias: bias, device: device, dtype: dtype);
        _toOut = nn.Linear(inner, queryDim, hasBias: true, device: device, dtype: dtype);
        register_module("to_q", _toQ);
        register_module("to_k", _toK);
        register_module("to_v", _toV);
        // The reference's to_out is [Linear, Dropout]; only index 0 has weights.
        register_module("to_out", nn.ModuleList<nn.Module<Tensor, Tensor>>(_toOut, nn.Dropout(0.0)));
    }

    /// <summary>Attends from <paramref name="hidden"/> <c>[b, n, queryDim]</c> to <paramref name="context"/> (itself when null).</summary>
    public override Tensor forward(Tensor hidden, Tensor? context)
    {
        using var scope = NewDisposeScope();
        var (key, value) = context is not null && CrossAttentionCache.Current is { } cache
            ? cache.GetOrAdd(this, context, ProjectKeyValue)
            : ProjectKeyValue(context ?? hidden);
        return Attend(hidden, key, value).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Keys and values of <paramref name="context"/> <c>[b, m, contextDim]</c>, split into heads: two <c>[b, heads, m, headDim]</c> tensors.
    /// </summary>
    public (Tensor Key, Tensor Value) ProjectKeyValue(Tensor context)
    {
        using var scope = NewDisposeScope();
        var key = SplitHeads(_toK.forward(context));
        var value = SplitHeads(_toV.forward(context));
        scope.MoveToOuter(key, value);
        return (key, value);
    }

    /// <summary>
    /// Attention of <paramref name="hidden"/> <c>[b, n, queryDim]</c> over precomputed <paramref name="key"/> and
    /// <paramref name="value"/> (from <see cref="ProjectKeyValue"/>); the batch of the keys may be 1 or b.
    /// </summary>
    public Tensor Attend(Tensor hidden, Tensor key, Tensor value)
    {
        using var scope = NewDisposeScope();
        long batch = hidden.shape[0];
        // Views keep their base alive: the projections and views are freed explicitly once attention has used them.
        using var projectedQuery = _toQ.forward(hidden);
        var query = SplitHeads(projectedQuery);
        if (key.shape[0] != batch)
        {
            key = key.expand(batch, -1, -1, -1);
            value = value.expand(batch, -1, -1, -1);
        }
        Tensor attended;
        var dtype = query.dtype;
        if (UpcastAttention && dtype is ScalarType.Float16 or ScalarType.BFloat16)
            attended = nn.functional.scaled_dot_product_attention(query.to(ScalarType.Float32), key.to(ScalarType.Float32), value.to(ScalarType.Float32)).to(dtype);
        else
            attended = nn.functional.scaled_dot_product_attention(query, key, value);
        query.Dispose();
        projectedQuery.Dispose();
        Tensor merged;
        using (var headsLast = attended.transpose(1, 2)) merged = headsLast.reshape(batch, -1, Heads * HeadDim);
        attended.Dispose();
        using var _ = merged;
        return _toOut.forward(merged).MoveToOuterDisposeScope();
    }

    private Tensor SplitHeads(Tensor x) => x.view(x.shape[0], -1, Heads, HeadDim).transpose(1, 2);
}
