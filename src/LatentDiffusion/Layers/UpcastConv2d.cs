using LatentDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Layers;

/// <summary>A square-kernel, zero-padded 2-D convolution whose weights are held narrower than it computes (see <see cref="UpcastLayer"/>).</summary>
internal sealed class UpcastConv2d : UpcastLayer
{
    /// <summary>Creates the convolution: <c>[out, in, k, k]</c> weights and an <c>[out]</c> bias held in <paramref name="storage"/>.</summary>
    public UpcastConv2d(long inChannels, long outChannels, long kernelSize, long stride, long padding, Device device, ScalarType storage, ScalarType compute)
        : base(nameof(Conv2d), [outChannels, inChannels, kernelSize, kernelSize], outChannels, device, storage, compute)
    {
        InChannels = inChannels;
        OutChannels = outChannels;
        KernelSize = kernelSize;
        Stride = stride;
        Padding = padding;
        if (ParameterInitialization.Skipped) return;
        // Initialised as nn.Conv2d initialises itself, then rounded to the storage dtype.
        using var initial = nn.Conv2d(inChannels, outChannels, kernelSize, stride: stride, padding: padding, device: device, dtype: compute);
        InitialiseFrom(initial.weight, initial.bias);
    }

    /// <summary>Input channels.</summary>
    public long InChannels { get; }

    /// <summary>Output channels.</summary>
    public long OutChannels { get; }

    /// <summary>The kernel's side.</summary>
    public long KernelSize { get; }

    /// <summary>The stride, both directions.</summary>
    public long Stride { get; }

    /// <summary>The zero padding, both sides and directions.</summary>
    public long Padding { get; }

    /// <inheritdoc />
    protected override Tensor Apply(Tensor input, Tensor weight, Tensor? bias)
        => nn.functional.conv2d(input, weight, bias, strides: [Stride, Stride], padding: [Padding, Padding]);
}
