using LatentDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Layers;

/// <summary>
/// Multi-head scaled dot-product attention over token sequences: self-attention when no context is given,
/// cross-attention to a context (the text encoder's hidden states) otherwise. The same class serves the UNet's
/// transformer blocks and the autoencoder's mid block, as the reference's <c>Attention</c> does: built with a group
/// norm (<see cref="CreateSpatial"/>) it takes a feature map <c>[b, c, h, w]</c>, normalises it, lets every pixel attend
/// to every other and adds the input back.
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

    private readonly nn.Module<Tensor, Tensor> _toQ;
    private readonly nn.Module<Tensor, Tensor> _toK;
    private readonly nn.Module<Tensor, Tensor> _toV;
    private readonly nn.Module<Tensor, Tensor> _toOut;
    private readonly GroupNorm? _groupNorm;

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
        : this(queryDim, crossAttentionDim, heads, headDim, bias, upcastAttention, normGroups: null, normEps: 0, device, dtype)
    {
    }

    /// <summary>
    /// The spatial self-attention of the autoencoder's mid block (the reference's <c>Attention</c> with
    /// <c>norm_num_groups</c> and <c>residual_connection=True</c>): <paramref name="channels"/> split into heads of
    /// <paramref name="headDim"/> (the autoencoder passes the channel count: one head), a group norm registered as
    /// <c>group_norm</c>, biases on every projection.
    /// </summary>
    /// <param name="channels">Channels of the feature map.</param>
    /// <param name="headDim">Width of each head.</param>
    /// <param name="groups">Groups of the normalisation.</param>
    /// <param name="eps">Epsilon of the normalisation.</param>
    /// <param name="device">Where the weights live.</param>
    /// <param name="dtype">The weights' dtype.</param>
    public static Attention CreateSpatial(int channels, int headDim, int groups, double eps, Device device, ScalarType dtype)
    {
        if (headDim <= 0 || channels % headDim != 0)
            throw new ArgumentException($"Attention over {channels} channels cannot be split into heads of {headDim}.", nameof(headDim));
        return new Attention(channels, null, channels / headDim, headDim, bias: true, upcastAttention: false, groups, eps, device, dtype);
    }

    private Attention(int queryDim, int? crossAttentionDim, int heads, int headDim, bool bias, bool upcastAttention, int? normGroups, double normEps, Device device, ScalarType dtype)
        : base(nameof(Attention))
    {
        if (normGroups is int groups)
        {
            _groupNorm = GroupNormalization.Create(groups, queryDim, normEps, device, dtype);
            register_module("group_norm", _groupNorm);
        }
        Heads = heads;
        HeadDim = headDim;
        IsCrossAttention = crossAttentionDim is not null;
        UpcastAttention = upcastAttention;
        int inner = heads * headDim;
        int contextDim = crossAttentionDim ?? queryDim;
        _toQ = ModuleBuilder.Linear(queryDim, inner, hasBias: bias, device: device, dtype: dtype);
        _toK = ModuleBuilder.Linear(contextDim, inner, hasBias: bias, device: device, dtype: dtype);
        _toV = ModuleBuilder.Linear(contextDim, inner, hasBias: bias, device: device, dtype: dtype);
        _toOut = ModuleBuilder.Linear(inner, queryDim, hasBias: true, device: device, dtype: dtype);
        register_module("to_q", _toQ);
        register_module("to_k", _toK);
        register_module("to_v", _toV);
        // The reference's to_out is [Linear, Dropout]; only index 0 has weights.
        register_module("to_out", nn.ModuleList<nn.Module<Tensor, Tensor>>(_toOut, nn.Dropout(0.0)));
    }

    /// <summary>
    /// Attends from <paramref name="hidden"/> <c>[b, n, queryDim]</c> to <paramref name="context"/> (itself when null);
    /// an attention built by <see cref="CreateSpatial"/> takes a feature map <c>[b, c, h, w]</c> and no context.
    /// </summary>
    public override Tensor forward(Tensor hidden, Tensor? context)
    {
        using var scope = NewDisposeScope();
        if (_groupNorm is not null) return ForwardSpatial(hidden).MoveToOuterDisposeScope();
        var (key, value) = ProjectKeyValue(context ?? hidden);
        return Attend(hidden, key, value).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Attends from <paramref name="hidden"/> <c>[b, n, queryDim]</c> to the context's states (itself when
    /// <paramref name="context"/> is null), taking the keys and values from the context's cache when it has one.
    /// </summary>
    public Tensor Forward(Tensor hidden, CrossAttentionContext? context)
    {
        if (context is null) return forward(hidden, null);
        using var scope = NewDisposeScope();
        var (key, value) = context.Cache is { } cache
            ? cache.GetOrAdd(this, context.States, ProjectKeyValue)
            : ProjectKeyValue(context.States);
        return Attend(hidden, key, value).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Keys and values of <paramref name="context"/> <c>[b, m, contextDim]</c>, split into heads: two <c>[b, heads, m, headDim]</c> tensors.
    /// </summary>
    public (Tensor Key, Tensor Value) ProjectKeyValue(Tensor context)
    {
        using var scope = NewDisposeScope();
        var key = SplitHeads(_toK.call(context));
        var value = SplitHeads(_toV.call(context));
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
        using var projectedQuery = _toQ.call(hidden);
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
        return _toOut.call(merged).MoveToOuterDisposeScope();
    }

    private Tensor ForwardSpatial(Tensor input)
    {
        if (input.dim() != 4)
            throw new ArgumentException($"Spatial attention takes a feature map [b, c, h, w]; got shape [{string.Join(", ", input.shape)}].", nameof(input));
        long b = input.shape[0], c = input.shape[1], h = input.shape[2], w = input.shape[3];
        // Pixels become tokens: [b, c, h, w] → [b, h·w, c]; the attention's output goes back to a map and onto the input.
        var tokens = _groupNorm!.forward(input).view(b, c, h * w).transpose(1, 2);
        var (key, value) = ProjectKeyValue(tokens);
        var attended = Attend(tokens, key, value);
        return attended.transpose(1, 2).reshape(b, c, h, w) + input;
    }

    private Tensor SplitHeads(Tensor x) => x.view(x.shape[0], -1, Heads, HeadDim).transpose(1, 2);
}
