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
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<Attention>? attentions;

    /// <summary>Builds the block on <paramref name="device"/> in <paramref name="dtype"/>.</summary>
    public UNetMidBlock2D(int channels, bool addAttention, int groups, double eps, Device device, ScalarType dtype) : base(nameof(UNetMidBlock2D))
    {
        resnets = nn.ModuleList(
            new ResnetBlock2D(channels, channels, tembChannels: null, groups, eps, "silu", outputScaleFactor: 1.0, device, dtype),
            new ResnetBlock2D(channels, channels, tembChannels: null, groups, eps, "silu", outputScaleFactor: 1.0, device, dtype));
        register_module("resnets", resnets);
        if (addAttention)
        {
            // attention_head_dim is the channel count in the autoencoder, hence a single head.
            attentions = nn.ModuleList(Attention.CreateSpatial(channels, channels, groups, eps, device, dtype));
            register_module("attentions", attentions);
        }
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        var x = resnets[0].forward(input, null);
        if (attentions is not null) x = x.Then(h => attentions[0].forward(h, null), input);
        return x.Then(h => resnets[1].forward(h, null), input);
    }
}
