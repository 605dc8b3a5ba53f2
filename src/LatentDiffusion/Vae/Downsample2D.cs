using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Vae;

/// <summary>
/// Halves the resolution with a stride-2 3x3 convolution. The encoder uses no symmetric padding: like the original LDM
/// autoencoder it pads one zero row/column on the bottom and right only, so the result is what the weights were trained with.
/// </summary>
internal sealed class Downsample2D : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d conv;

    /// <summary>Builds the layer on <paramref name="device"/> in <paramref name="dtype"/>.</summary>
    public Downsample2D(int channels, Device device, ScalarType dtype) : base(nameof(Downsample2D))
    {
        conv = nn.Conv2d(channels, channels, 3, stride: 2, padding: 0L, device: device, dtype: dtype);
        register_module("conv", conv);
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        using var padded = nn.functional.pad(input, [0, 1, 0, 1], PaddingModes.Constant, 0.0);
        return conv.forward(padded);
    }
}
