using LatentDiffusion.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.UNet;

/// <summary>An encoder stage of residual layers only (the lowest-resolution stage of Stable Diffusion).</summary>
public sealed class DownBlock2D : UNetDownBlock
{
    private readonly ResnetBlock2D[] _resnets;
    private readonly Downsample2D? _downsampler;

    /// <summary>Creates the stage.</summary>
    /// <param name="inChannels">Input channels.</param>
    /// <param name="outChannels">Output channels.</param>
    /// <param name="tembChannels">Width of the time embedding.</param>
    /// <param name="numLayers">Residual layers.</param>
    /// <param name="addDownsample">End with a down-sampler.</param>
    /// <param name="config">Normalisation, activation and padding settings.</param>
    /// <param name="device">Where the weights live.</param>
    /// <param name="dtype">The weights' dtype.</param>
    public DownBlock2D(int inChannels, int outChannels, int tembChannels, int numLayers, bool addDownsample, UNet2DConditionConfig config, Device device, ScalarType dtype)
        : base(nameof(DownBlock2D))
    {
        _resnets = Enumerable.Range(0, numLayers)
            .Select(i => new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, tembChannels, config.NormNumGroups, config.NormEps, config.ActFn, 1.0, device, dtype))
            .ToArray();
        register_module("resnets", nn.ModuleList(_resnets));
        if (addDownsample)
        {
            _downsampler = new Downsample2D(outChannels, outChannels, config.DownsamplePadding, device, dtype);
            register_module("downsamplers", nn.ModuleList(_downsampler));
        }
    }

    /// <inheritdoc/>
    public override (Tensor Output, Tensor[] Skips) forward(Tensor hidden, Tensor temb, CrossAttentionContext? context)
    {
        using var scope = NewDisposeScope();
        var skips = new List<Tensor>(_resnets.Length + 1);
        foreach (var resnet in _resnets)
        {
            hidden = resnet.forward(hidden, temb);
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
