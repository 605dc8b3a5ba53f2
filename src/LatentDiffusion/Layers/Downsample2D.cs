using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Layers;

/// <summary>Halves the resolution with a stride-2 3x3 convolution.</summary>
public sealed class Downsample2D : nn.Module<Tensor, Tensor>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    private readonly nn.Module<Tensor, Tensor> _conv;
    private readonly int _padding;

    /// <summary>Creates the down-sampler.</summary>
    /// <param name="channels">Input channels.</param>
    /// <param name="outChannels">Output channels.</param>
    /// <param name="padding">Symmetric padding of the convolution (<c>downsample_padding</c>); 0 pads only right and bottom, by one.</param>
    /// <param name="device">Where the weights live.</param>
    /// <param name="dtype">The weights' dtype.</param>
    public Downsample2D(int channels, int outChannels, int padding, Device device, ScalarType dtype) : base(nameof(Downsample2D))
    {
        _padding = padding;
        _conv = ModuleBuilder.Conv2d(channels, outChannels, 3, stride: 2, padding: padding, device: device, dtype: dtype);
        register_module("conv", _conv);
    }

    /// <summary><c>[b, c, h, w]</c> → <c>[b, out, ⌈h/2⌉, ⌈w/2⌉]</c> (with the default padding).</summary>
    public override Tensor forward(Tensor input)
    {
        if (_padding != 0) return _conv.call(input);
        // The original LDM checkpoints pad asymmetrically; the reference keeps that when padding is 0.
        using var scope = NewDisposeScope();
        return _conv.call(nn.functional.pad(input, [0, 1, 0, 1])).MoveToOuterDisposeScope();
    }
}
