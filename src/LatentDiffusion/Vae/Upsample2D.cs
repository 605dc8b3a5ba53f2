using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Vae;

/// <summary>Doubles the resolution by nearest-neighbour repetition followed by a 3x3 convolution.</summary>
internal sealed class Upsample2D : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d conv;

    /// <summary>Builds the layer on <paramref name="device"/> in <paramref name="dtype"/>.</summary>
    public Upsample2D(int channels, Device device, ScalarType dtype) : base(nameof(Upsample2D))
    {
        conv = nn.Conv2d(channels, channels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        register_module("conv", conv);
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        using var upsampled = nn.functional.interpolate(input, scale_factor: [2.0, 2.0], mode: InterpolationMode.Nearest);
        return conv.forward(upsampled);
    }
}
