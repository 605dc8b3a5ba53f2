using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Layers;

/// <summary>Doubles the resolution (or reaches a given size) by nearest-neighbour interpolation, then a 3x3 convolution.</summary>
public sealed class Upsample2D : nn.Module<Tensor, long[]?, Tensor>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    private readonly nn.Module<Tensor, Tensor> _conv;

    /// <summary>Creates the up-sampler.</summary>
    /// <param name="channels">Input channels.</param>
    /// <param name="outChannels">Output channels.</param>
    /// <param name="device">Where the weights live.</param>
    /// <param name="dtype">The weights' dtype.</param>
    public Upsample2D(int channels, int outChannels, Device device, ScalarType dtype) : base(nameof(Upsample2D))
    {
        _conv = ModuleBuilder.Conv2d(channels, outChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        register_module("conv", _conv);
    }

    /// <summary>
    /// <c>[b, c, h, w]</c> → <c>[b, out, 2h, 2w]</c>, or to <paramref name="outputSize"/> (<c>[h', w']</c>) when given: the
    /// UNet passes the size of the skip connection it will be concatenated with when the latent's sides are not
    /// multiples of the total down-sampling factor.
    /// </summary>
    public override Tensor forward(Tensor input, long[]? outputSize)
    {
        using var scope = NewDisposeScope();
        var up = outputSize is null
            ? nn.functional.interpolate(input, scale_factor: [2.0, 2.0], mode: InterpolationMode.Nearest)
            : nn.functional.interpolate(input, size: outputSize, mode: InterpolationMode.Nearest);
        return _conv.call(up).MoveToOuterDisposeScope();
    }
}
