using LatentDiffusion.Layers;
using LatentDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Vae;

/// <summary>One resolution level of the decoder: resnets (one more than the encoder's), then (except at the last level) an upsampler.</summary>
internal sealed class UpDecoderBlock2D : nn.Module<Tensor, Tensor>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    private readonly ModuleList<ResnetBlock2D> _resnets;
    private readonly ModuleList<Upsample2D>? _upsamplers;

    /// <summary>Builds the block on <paramref name="device"/> in <paramref name="dtype"/>.</summary>
    public UpDecoderBlock2D(int inChannels, int outChannels, int numLayers, bool addUpsample, int groups, double eps, Device device, ScalarType dtype)
        : base(nameof(UpDecoderBlock2D))
    {
        _resnets = nn.ModuleList(Enumerable.Range(0, numLayers)
            .Select(i => new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, tembChannels: null, groups, eps, "silu", outputScaleFactor: 1.0, device, dtype)).ToArray());
        register_module("resnets", _resnets);
        if (addUpsample)
        {
            _upsamplers = nn.ModuleList(new Upsample2D(outChannels, outChannels, device, dtype));
            register_module("upsamplers", _upsamplers);
        }
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        var x = input;
        foreach (var resnet in _resnets) x = x.Then(h => resnet.forward(h, null), input);
        if (_upsamplers is not null) foreach (var up in _upsamplers) x = x.Then(h => up.forward(h, null), input);
        return ReferenceEquals(x, input) ? x.alias() : x;
    }
}
