using LatentDiffusion.Layers;
using LatentDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Vae;

/// <summary>One resolution level of the encoder: resnets, then (except at the last level) a downsampler.</summary>
internal sealed class DownEncoderBlock2D : nn.Module<Tensor, Tensor>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    private readonly ModuleList<ResnetBlock2D> _resnets;
    private readonly ModuleList<Downsample2D>? _downsamplers;

    /// <summary>Builds the block on <paramref name="device"/> in <paramref name="dtype"/>.</summary>
    public DownEncoderBlock2D(int inChannels, int outChannels, int numLayers, bool addDownsample, int groups, double eps, Device device, ScalarType dtype)
        : base(nameof(DownEncoderBlock2D))
    {
        _resnets = nn.ModuleList(Enumerable.Range(0, numLayers)
            .Select(i => new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, tembChannels: null, groups, eps, "silu", outputScaleFactor: 1.0, device, dtype)).ToArray());
        register_module("resnets", _resnets);
        if (addDownsample)
        {
            _downsamplers = nn.ModuleList(new Downsample2D(outChannels, outChannels, padding: 0, device, dtype));
            register_module("downsamplers", _downsamplers);
        }
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        var x = input;
        foreach (var resnet in _resnets) x = x.Then(h => resnet.forward(h, null), input);
        if (_downsamplers is not null) foreach (var down in _downsamplers) x = x.Then(down.forward, input);
        return ReferenceEquals(x, input) ? x.alias() : x;
    }
}
