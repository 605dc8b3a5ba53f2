using LatentDiffusion.Layers;
using LatentDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Vae;

/// <summary>
/// The lowest-resolution stage of encoder and decoder: resnet, self-attention, resnet (the reference's
/// <c>UNetMidBlock2D</c> with one layer and no timestep). Without <c>mid_block_add_attention</c> it is just the two resnets.
/// </summary>
internal sealed class UNetMidBlock2D : nn.Module<Tensor, Tensor>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    private readonly ModuleList<ResnetBlock2D> _resnets;
    private readonly ModuleList<Attention>? _attentions;

    /// <summary>Builds the block on <paramref name="device"/> in <paramref name="dtype"/>.</summary>
    public UNetMidBlock2D(int channels, bool addAttention, int groups, double eps, Device device, ScalarType dtype) : base(nameof(UNetMidBlock2D))
    {
        _resnets = nn.ModuleList(
            new ResnetBlock2D(channels, channels, tembChannels: null, groups, eps, "silu", outputScaleFactor: 1.0, device, dtype),
            new ResnetBlock2D(channels, channels, tembChannels: null, groups, eps, "silu", outputScaleFactor: 1.0, device, dtype));
        register_module("resnets", _resnets);
        if (addAttention)
        {
            // attention_head_dim is the channel count in the autoencoder, hence a single head.
            _attentions = nn.ModuleList(Attention.CreateSpatial(channels, channels, groups, eps, device, dtype));
            register_module("attentions", _attentions);
        }
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        var x = _resnets[0].forward(input, null);
        if (_attentions is not null) x = x.Then(h => _attentions[0].forward(h, null), input);
        return x.Then(h => _resnets[1].forward(h, null), input);
    }
}
