using LatentDiffusion.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.UNet;

/// <summary>A decoder stage of residual layers only, each taking one skip connection.</summary>
public sealed class UpBlock2D : UNetUpBlock
{
    private readonly ResnetBlock2D[] _resnets;
    private readonly Upsample2D? _upsampler;

    /// <summary>Creates the stage.</summary>
    /// <param name="inChannels">Channels of the encoder stage this one mirrors' input (the last skip's width).</param>
    /// <param name="outChannels">Output channels.</param>
    /// <param name="prevOutputChannels">Channels coming from the previous decoder stage.</param>
    /// <param name="tembChannels">Width of the time embedding.</param>
    /// <param name="numLayers">Residual layers.</param>
    /// <param name="addUpsample">End with an up-sampler.</param>
    /// <param name="config">Normalisation and activation settings.</param>
    /// <param name="device">Where the weights live.</param>
    /// <param name="dtype">The weights' dtype.</param>
    public UpBlock2D(int inChannels, int outChannels, int prevOutputChannels, int tembChannels, int numLayers, bool addUpsample,
        UNet2DConditionConfig config, Device device, ScalarType dtype)
        : base(nameof(UpBlock2D))
    {
        _resnets = Enumerable.Range(0, numLayers)
            .Select(i => new ResnetBlock2D(UpBlockChannels.ResnetInput(i, numLayers, inChannels, outChannels, prevOutputChannels), outChannels, tembChannels,
                config.NormNumGroups, config.NormEps, config.ActFn, 1.0, device, dtype))
            .ToArray();
        register_module("resnets", nn.ModuleList(_resnets));
        if (addUpsample)
        {
            _upsampler = new Upsample2D(outChannels, outChannels, device, dtype);
            register_module("upsamplers", nn.ModuleList(_upsampler));
        }
    }

    /// <inheritdoc/>
    public override int SkipCount => _resnets.Length;

    /// <inheritdoc/>
    public override Tensor forward(Tensor hidden, IReadOnlyList<Tensor> skips, Tensor temb, CrossAttentionContext? context, long[]? upsampleSize)
    {
        using var scope = NewDisposeScope();
        for (int i = 0; i < _resnets.Length; i++)
        {
            using var joined = cat([hidden, skips[skips.Count - 1 - i]], 1);
            hidden = _resnets[i].forward(joined, temb);
        }
        if (_upsampler is not null) hidden = _upsampler.forward(hidden, upsampleSize);
        return hidden.MoveToOuterDisposeScope();
    }
}
