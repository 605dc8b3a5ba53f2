using LatentDiffusion.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.UNet;

/// <summary>A decoder stage whose residual layers (each taking one skip connection) are each followed by a spatial transformer.</summary>
public sealed class CrossAttnUpBlock2D : UNetUpBlock
{
    private readonly ResnetBlock2D[] _resnets;
    private readonly Transformer2DModel[] _attentions;
    private readonly Upsample2D? _upsampler;

    /// <summary>Creates the stage.</summary>
    /// <param name="inChannels">Channels of the last skip (the mirrored encoder stage's input).</param>
    /// <param name="outChannels">Output channels.</param>
    /// <param name="prevOutputChannels">Channels coming from the previous decoder stage.</param>
    /// <param name="tembChannels">Width of the time embedding.</param>
    /// <param name="numLayers">Residual layers (and transformers).</param>
    /// <param name="addUpsample">End with an up-sampler.</param>
    /// <param name="heads">Attention heads.</param>
    /// <param name="transformerLayers">Transformer blocks in each spatial transformer.</param>
    /// <param name="crossAttentionDim">Width of the context.</param>
    /// <param name="onlyCrossAttention">The transformers' first attention attends to the context too.</param>
    /// <param name="config">The UNet's shared settings.</param>
    /// <param name="device">Where the weights live.</param>
    /// <param name="dtype">The weights' dtype.</param>
    public CrossAttnUpBlock2D(int inChannels, int outChannels, int prevOutputChannels, int tembChannels, int numLayers, bool addUpsample,
        int heads, int transformerLayers, int crossAttentionDim, bool onlyCrossAttention, UNet2DConditionConfig config, Device device, ScalarType dtype)
        : base(nameof(CrossAttnUpBlock2D))
    {
        _resnets = Enumerable.Range(0, numLayers)
            .Select(i => new ResnetBlock2D(UpBlockChannels.ResnetInput(i, numLayers, inChannels, outChannels, prevOutputChannels), outChannels, tembChannels,
                config.NormNumGroups, config.NormEps, config.ActFn, 1.0, device, dtype))
            .ToArray();
        _attentions = Enumerable.Range(0, numLayers)
            .Select(_ => new Transformer2DModel(heads, outChannels / heads, outChannels, transformerLayers, crossAttentionDim,
                config.NormNumGroups, config.UseLinearProjection, onlyCrossAttention, config.UpcastAttention, device, dtype))
            .ToArray();
        register_module("attentions", nn.ModuleList(_attentions));
        register_module("resnets", nn.ModuleList(_resnets));
        if (addUpsample)
        {
            _upsampler = new Upsample2D(outChannels, outChannels, device, dtype);
            register_module("upsamplers", nn.ModuleList(_upsampler));
        }
    }

    /// <summary>The stage's spatial transformers.</summary>
    public IReadOnlyList<Transformer2DModel> Attentions => _attentions;

    /// <inheritdoc/>
    public override int SkipCount => _resnets.Length;

    /// <inheritdoc/>
    public override Tensor forward(Tensor hidden, IReadOnlyList<Tensor> skips, Tensor temb, CrossAttentionContext? context, long[]? upsampleSize)
    {
        using var scope = NewDisposeScope();
        for (int i = 0; i < _resnets.Length; i++)
        {
            using var joined = cat([hidden, skips[skips.Count - 1 - i]], 1);
            using var h = _resnets[i].forward(joined, temb);
            hidden = _attentions[i].forward(h, context);
        }
        if (_upsampler is not null) hidden = _upsampler.forward(hidden, upsampleSize);
        return hidden.MoveToOuterDisposeScope();
    }
}
