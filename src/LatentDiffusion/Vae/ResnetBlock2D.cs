using LatentDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Vae;

/// <summary>
/// The autoencoder's residual block: GroupNorm → SiLU → 3x3 conv, twice, plus a 1x1-conv shortcut when the channel count
/// changes. Unlike the UNet's block it has no timestep embedding (the reference builds it with <c>temb_channels=None</c>).
/// </summary>
internal sealed class ResnetBlock2D : nn.Module<Tensor, Tensor>
{
    private readonly GroupNorm norm1;
    private readonly Conv2d conv1;
    private readonly GroupNorm norm2;
    private readonly Conv2d conv2;
    private readonly Conv2d? conv_shortcut;

    /// <summary>Builds the block on <paramref name="device"/> in <paramref name="dtype"/>.</summary>
    public ResnetBlock2D(int inChannels, int outChannels, int groups, double eps, Device device, ScalarType dtype) : base(nameof(ResnetBlock2D))
    {
        norm1 = GroupNormalization.Create(groups, inChannels, eps, device, dtype);
        conv1 = nn.Conv2d(inChannels, outChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        norm2 = GroupNormalization.Create(groups, outChannels, eps, device, dtype);
        conv2 = nn.Conv2d(outChannels, outChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        register_module("norm1", norm1);
        register_module("conv1", conv1);
        register_module("norm2", norm2);
        register_module("conv2", conv2);
        if (inChannels != outChannels)
        {
            conv_shortcut = nn.Conv2d(inChannels, outChannels, 1, stride: 1, padding: 0L, device: device, dtype: dtype);
            register_module("conv_shortcut", conv_shortcut);
        }
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        // Each intermediate is released as soon as it is consumed (see Eager).
        var h = norm1.forward(input)
            .Then(Eager.Silu, input)
            .Then(conv1.forward, input)
            .Then(norm2.forward, input)
            .Then(Eager.Silu, input)
            .Then(conv2.forward, input);
        // output_scale_factor is 1 everywhere in the autoencoder, so the sum is not rescaled.
        if (conv_shortcut is null) return h.Then(x => x.add_(input), input);
        using var shortcut = conv_shortcut.forward(input);
        return h.add_(shortcut);
    }
}
