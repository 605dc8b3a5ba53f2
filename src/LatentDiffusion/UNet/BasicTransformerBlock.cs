using LatentDiffusion.Layers;
using LatentDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.UNet;

/// <summary>
/// The pre-norm transformer block of the spatial transformer: self-attention, cross-attention to the text context,
/// feed-forward, each after a LayerNorm and added to the residual stream.
/// </summary>
public sealed class BasicTransformerBlock : nn.Module<Tensor, CrossAttentionContext?, Tensor>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    private readonly LayerNorm _norm1;
    private readonly Attention _attn1;
    private readonly LayerNorm _norm2;
    private readonly Attention _attn2;
    private readonly LayerNorm _norm3;
    private readonly FeedForward _ff;
    private readonly bool _onlyCrossAttention;

    /// <summary>The first (self-)attention.</summary>
    public Attention SelfAttention => _attn1;

    /// <summary>The second (cross-)attention.</summary>
    public Attention CrossAttention => _attn2;

    /// <summary>Creates the block.</summary>
    /// <param name="dim">Width of the tokens.</param>
    /// <param name="heads">Attention heads.</param>
    /// <param name="headDim">Width of each head.</param>
    /// <param name="crossAttentionDim">Width of the context.</param>
    /// <param name="onlyCrossAttention">The first attention attends to the context too.</param>
    /// <param name="upcastAttention">Attention in float32 for half-precision models.</param>
    /// <param name="device">Where the weights live.</param>
    /// <param name="dtype">The weights' dtype.</param>
    /// <param name="normEps">Epsilon of the LayerNorms.</param>
    public BasicTransformerBlock(int dim, int heads, int headDim, int crossAttentionDim, bool onlyCrossAttention, bool upcastAttention,
        Device device, ScalarType dtype, double normEps = 1e-5)
        : base(nameof(BasicTransformerBlock))
    {
        _onlyCrossAttention = onlyCrossAttention;
        _norm1 = nn.LayerNorm(dim, normEps, elementwise_affine: true, device: device, dtype: dtype);
        _attn1 = new Attention(dim, onlyCrossAttention ? crossAttentionDim : null, heads, headDim, bias: false, upcastAttention, device, dtype);
        _norm2 = nn.LayerNorm(dim, normEps, elementwise_affine: true, device: device, dtype: dtype);
        _attn2 = new Attention(dim, crossAttentionDim, heads, headDim, bias: false, upcastAttention, device, dtype);
        _norm3 = nn.LayerNorm(dim, normEps, elementwise_affine: true, device: device, dtype: dtype);
        _ff = new FeedForward(dim, device, dtype);
        register_module("norm1", _norm1);
        register_module("attn1", _attn1);
        register_module("norm2", _norm2);
        register_module("attn2", _attn2);
        register_module("norm3", _norm3);
        register_module("ff", _ff);
    }

    /// <summary><paramref name="hidden"/> <c>[b, n, dim]</c> attending to <paramref name="context"/> <c>[b, m, crossAttentionDim]</c>.</summary>
    public override Tensor forward(Tensor hidden, CrossAttentionContext? context)
    {
        // Each normalised input and each superseded residual is freed as soon as it is used (peak memory at batch 4+).
        Tensor h;
        using (var n = _norm1.forward(hidden)) h = _attn1.Forward(n, _onlyCrossAttention ? context : null).add_(hidden);
        using (var n = _norm2.forward(h)) h = Eager.Replace(h, _attn2.Forward(n, context).add_(h));
        using (var n = _norm3.forward(h)) h = Eager.Replace(h, _ff.forward(n).add_(h));
        return h;
    }
}
