using LatentDiffusion.Layers;
using LatentDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Vae;

/// <summary>One resolution level of the encoder: resnets, then (except at the last level) a downsampler.</summary>
internal sealed class DownEncoderBlock2D : nn.Module<Tensor, Tensor>
{
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<Downsample2D>? downsamplers;

    /// <summary>Builds the block on <paramref name="device"/> in <paramref name="dtype"/>.</summary>
    public DownEncoderBlock2D(int inChannels, int outChannels, int numLayers, bool addDownsample, int groups, double eps, Device device, ScalarType dtype)
        : base(nameof(DownEncoderBlock2D))
    {
        resnets = nn.ModuleList(Enumerable.Range(0, numLayers)
            .Select(i => new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, tembChannels: null, groups, eps, "silu", outputScaleFactor: 1.0, device, dtype)).ToArray());
        register_module("resnets", resnets);
        if (addDownsample)
        {
            downsamplers = nn.ModuleList(new Downsample2D(outChannels, outChannels, padding: 0, device, dtype));
            register_module("downsamplers", downsamplers);
        }
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        var x = input;
        foreach (var resnet in resnets) x = x.Then(h => resnet.forward(h, null), input);
        if (downsamplers is not null) foreach (var down in downsamplers) x = x.Then(down.forward, input);
        return ReferenceEquals(x, input) ? x.alias() : x;
    }
}
