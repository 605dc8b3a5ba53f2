using LatentDiffusion.Layers;
using LatentDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.UNet;

/// <summary>
/// The spatial transformer: normalises a feature map, flattens its pixels into tokens, runs transformer blocks that
/// cross-attend to the text, and adds the result back to the feature map.
/// </summary>
public sealed class Transformer2DModel : nn.Module<Tensor, CrossAttentionContext?, Tensor>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    private readonly GroupNorm _norm;
    private readonly nn.Module<Tensor, Tensor> _projIn;
    private readonly nn.Module<Tensor, Tensor> _projOut;
    private readonly BasicTransformerBlock[] _blocks;
    private readonly bool _useLinearProjection;
    private readonly int _innerDim;

    /// <summary>The transformer blocks.</summary>
    public IReadOnlyList<BasicTransformerBlock> TransformerBlocks => _blocks;

    /// <summary>Creates the transformer.</summary>
    /// <param name="heads">Attention heads.</param>
    /// <param name="headDim">Width of each head.</param>
    /// <param name="inChannels">Channels of the feature map.</param>
    /// <param name="numLayers">Transformer blocks.</param>
    /// <param name="crossAttentionDim">Width of the context.</param>
    /// <param name="normNumGroups">Groups of the input normalisation.</param>
    /// <param name="useLinearProjection">Project in and out with linear layers on the tokens instead of 1x1 convolutions on the map.</param>
    /// <param name="onlyCrossAttention">The blocks' first attention attends to the context too.</param>
    /// <param name="upcastAttention">Attention in float32 for half-precision models.</param>
    /// <param name="device">Where the weights live.</param>
    /// <param name="dtype">The weights' dtype.</param>
    public Transformer2DModel(int heads, int headDim, int inChannels, int numLayers, int crossAttentionDim, int normNumGroups,
        bool useLinearProjection, bool onlyCrossAttention, bool upcastAttention, Device device, ScalarType dtype)
        : base(nameof(Transformer2DModel))
    {
        _useLinearProjection = useLinearProjection;
        _innerDim = heads * headDim;
        _norm = GroupNormalization.Create(normNumGroups, inChannels, 1e-6, device, dtype);
        if (useLinearProjection)
        {
            _projIn = ModuleBuilder.Linear(inChannels, _innerDim, hasBias: true, device: device, dtype: dtype);
            _projOut = ModuleBuilder.Linear(_innerDim, inChannels, hasBias: true, device: device, dtype: dtype);
        }
        else
        {
            _projIn = ModuleBuilder.Conv2d(inChannels, _innerDim, 1, stride: 1, device: device, dtype: dtype);
            _projOut = ModuleBuilder.Conv2d(_innerDim, inChannels, 1, stride: 1, device: device, dtype: dtype);
        }
        _blocks = Enumerable.Range(0, numLayers)
            .Select(_ => new BasicTransformerBlock(_innerDim, heads, headDim, crossAttentionDim, onlyCrossAttention, upcastAttention, device, dtype))
            .ToArray();
        register_module("norm", _norm);
        register_module("proj_in", _projIn);
        register_module("transformer_blocks", nn.ModuleList(_blocks));
        register_module("proj_out", _projOut);
    }

    /// <summary><paramref name="input"/> <c>[b, c, h, w]</c> attending to <paramref name="context"/> → <c>[b, c, h, w]</c>.</summary>
    public override Tensor forward(Tensor input, CrossAttentionContext? context)
    {
        using var scope = NewDisposeScope();
        long b = input.shape[0], c = input.shape[1], height = input.shape[2], width = input.shape[3];
        Tensor h;
        using (var normed = _norm.forward(input))
        {
            if (_useLinearProjection)
            {
                using var tokens = normed.permute(0, 2, 3, 1).reshape(b, height * width, c);
                h = _projIn.call(tokens);
            }
            else
            {
                using var projected = _projIn.call(normed);
                h = projected.permute(0, 2, 3, 1).reshape(b, height * width, _innerDim);
            }
        }
        foreach (var block in _blocks) h = Eager.Replace(h, block.forward(h, context));
        if (_useLinearProjection)
            h = _projOut.call(h).reshape(b, height, width, c).permute(0, 3, 1, 2).contiguous();
        else
            h = _projOut.call(h.reshape(b, height, width, _innerDim).permute(0, 3, 1, 2).contiguous());
        return h.add_(input).MoveToOuterDisposeScope();
    }
}
