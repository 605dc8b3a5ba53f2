using LatentDiffusion.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.UNet;

/// <summary>An encoder stage whose residual layers are each followed by a spatial transformer attending to the text.</summary>
public sealed class CrossAttnDownBlock2D : UNetDownBlock
{
    private readonly ResnetBlock2D[] _resnets;
    private readonly Transformer2DModel[] _attentions;
    private readonly Downsample2D? _downsampler;

    /// <summary>Creates the stage.</summary>
    /// <param name="inChannels">Input channels.</param>
    /// <param name="outChannels">Output channels.</param>
    /// <param name="tembChannels">Width of the time embedding.</param>
    /// <param name="numLayers">Residual layers (and transformers).</param>
    /// <param name="addDownsample">End with a down-sampler.</param>
    /// <param name="block">Index of the stage, for its per-block settings in <paramref name="config"/>.</param>
    /// <param name="config">The UNet's settings.</param>
    /// <param name="device">Where the weights live.</param>
    /// <param name="dtype">The weights' dtype.</param>
    public CrossAttnDownBlock2D(int inChannels, int outChannels, int tembChannels, int numLayers, bool addDownsample, int block,
        UNet2DConditionConfig config, Device device, ScalarType dtype)
        : base(nameof(CrossAttnDownBlock2D))
    {
        int heads = config.AttentionHeads[block];
        _resnets = Enumerable.Range(0, numLayers)
            .Select(i => new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, tembChannels, config.NormNumGroups, config.NormEps, config.ActFn, 1.0, device, dtype))
            .ToArray();
        _attentions = Enumerable.Range(0, numLayers)
            .Select(_ => new Transformer2DModel(heads, outChannels / heads, outChannels, config.TransformerLayersPerBlock[block], config.CrossAttentionDim[block],
                config.NormNumGroups, config.UseLinearProjection, config.OnlyCrossAttention[block], config.UpcastAttention, device, dtype))
            .ToArray();
        register_module("attentions", nn.ModuleList(_attentions));
        register_module("resnets", nn.ModuleList(_resnets));
        if (addDownsample)
        {
            _downsampler = new Downsample2D(outChannels, outChannels, config.DownsamplePadding, device, dtype);
            register_module("downsamplers", nn.ModuleList(_downsampler));
        }
    }

    /// <summary>The stage's spatial transformers.</summary>
    public IReadOnlyList<Transformer2DModel> Attentions => _attentions;

    /// <inheritdoc/>
    public override (Tensor Output, Tensor[] Skips) forward(Tensor hidden, Tensor temb, CrossAttentionContext? context)
    {
        using var scope = NewDisposeScope();
        var skips = new List<Tensor>(_resnets.Length + 1);
        for (int i = 0; i < _resnets.Length; i++)
        {
            var h = _resnets[i].forward(hidden, temb);
            hidden = _attentions[i].forward(h, context);
            h.Dispose();
            skips.Add(hidden);
        }
        if (_downsampler is not null)
        {
            hidden = _downsampler.forward(hidden);
            skips.Add(hidden);
        }
        scope.MoveToOuter(skips);
        return (hidden, skips.ToArray());
    }
}
