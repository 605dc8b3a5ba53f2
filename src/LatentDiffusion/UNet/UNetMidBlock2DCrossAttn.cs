using LatentDiffusion.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.UNet;

/// <summary>The bottleneck: a residual layer, then (spatial transformer, residual layer) pairs, at the lowest resolution.</summary>
public sealed class UNetMidBlock2DCrossAttn : nn.Module<Tensor, Tensor, CrossAttentionContext?, Tensor>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    private readonly ResnetBlock2D[] _resnets;
    private readonly Transformer2DModel[] _attentions;

    /// <summary>Creates the block.</summary>
    /// <param name="channels">Channels in and out.</param>
    /// <param name="tembChannels">Width of the time embedding.</param>
    /// <param name="config">The UNet's settings (its last block's heads, context width and transformer depth apply).</param>
    /// <param name="device">Where the weights live.</param>
    /// <param name="dtype">The weights' dtype.</param>
    /// <param name="numLayers">Transformer/residual pairs after the first residual layer.</param>
    public UNetMidBlock2DCrossAttn(int channels, int tembChannels, UNet2DConditionConfig config, Device device, ScalarType dtype, int numLayers = 1)
        : base(nameof(UNetMidBlock2DCrossAttn))
    {
        int last = config.BlockCount - 1;
        int heads = config.AttentionHeads[last];
        _resnets = Enumerable.Range(0, numLayers + 1)
            .Select(_ => new ResnetBlock2D(channels, channels, tembChannels, config.NormNumGroups, config.NormEps, config.ActFn, config.MidBlockScaleFactor, device, dtype))
            .ToArray();
        _attentions = Enumerable.Range(0, numLayers)
            .Select(_ => new Transformer2DModel(heads, channels / heads, channels, config.TransformerLayersPerBlock[last], config.CrossAttentionDim[last],
                config.NormNumGroups, config.UseLinearProjection, onlyCrossAttention: false, config.UpcastAttention, device, dtype))
            .ToArray();
        register_module("attentions", nn.ModuleList(_attentions));
        register_module("resnets", nn.ModuleList(_resnets));
    }

    /// <summary>The block's spatial transformers.</summary>
    public IReadOnlyList<Transformer2DModel> Attentions => _attentions;

    /// <summary><paramref name="hidden"/> <c>[b, c, h, w]</c> → <c>[b, c, h, w]</c>.</summary>
    public override Tensor forward(Tensor hidden, Tensor temb, CrossAttentionContext? context)
    {
        using var scope = NewDisposeScope();
        hidden = _resnets[0].forward(hidden, temb);
        for (int i = 0; i < _attentions.Length; i++)
        {
            using var attended = _attentions[i].forward(hidden, context);
            hidden = _resnets[i + 1].forward(attended, temb);
        }
        return hidden.MoveToOuterDisposeScope();
    }
}
