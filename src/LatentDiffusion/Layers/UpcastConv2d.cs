using LatentDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Layers;

/// <summary>
/// A square-kernel 2-D convolution that holds its weights in a narrower dtype than it computes in, as
/// <see cref="UpcastLinear"/> does for linear layers: every call converts them to the input's dtype. Named (<c>weight</c>,
/// <c>bias</c>) as <c>nn.Conv2d</c> is.
/// </summary>
internal sealed class UpcastConv2d : nn.Module<Tensor, Tensor>
{
    /// <summary>Does nothing: the parameters are registered explicitly under <c>nn.Conv2d</c>'s names.</summary>
    protected override void RegisterComponents() { }

    private Parameter _weight;
    private Parameter _bias;

    /// <summary>Creates the convolution: <c>[out, in, k, k]</c> weights and an <c>[out]</c> bias held in <paramref name="storage"/>.</summary>
    public UpcastConv2d(long inChannels, long outChannels, long kernelSize, long stride, long padding, Device device, ScalarType storage, ScalarType compute)
        : base(nameof(Conv2d))
    {
        InChannels = inChannels;
        OutChannels = outChannels;
        KernelSize = kernelSize;
        Stride = stride;
        Padding = padding;
        ComputeDType = compute;
        _weight = new Parameter(empty([outChannels, inChannels, kernelSize, kernelSize], storage, device));
        _bias = new Parameter(empty([outChannels], storage, device));
        register_parameter("weight", _weight);
        register_parameter("bias", _bias);
        if (ParameterInitialization.Skipped) return;
        // Initialised as nn.Conv2d initialises itself, then rounded to the storage dtype.
        using var initial = nn.Conv2d(inChannels, outChannels, kernelSize, stride: stride, padding: padding, device: device, dtype: compute);
        using var noGrad = no_grad();
        _weight.copy_(initial.weight);
        _bias.copy_(initial.bias!);
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

    /// <summary>The dtype the convolution was built to compute in (its inputs' dtype).</summary>
    public ScalarType ComputeDType { get; }

    /// <summary>The weights in the storage dtype (named as <c>nn.Conv2d</c>'s, so <c>Module.to</c> finds it).</summary>
    public Parameter weight
    {
        get => _weight;
        set
        {
            if (ReferenceEquals(value, _weight)) return;
            _weight.Dispose();
            _weight = value;
            register_parameter("weight", _weight);
        }
    }

    /// <summary>The bias in the storage dtype.</summary>
    public Parameter bias
    {
        get => _bias;
        set
        {
            if (ReferenceEquals(value, _bias)) return;
            _bias.Dispose();
            _bias = value;
            register_parameter("bias", _bias);
        }
    }

    /// <summary>The convolution, with the weights and bias converted to <paramref name="input"/>'s dtype for this call.</summary>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var w = _weight.to(input.dtype);
        var b = _bias.to(input.dtype);
        return nn.functional.conv2d(input, w, b, strides: [Stride, Stride], padding: [Padding, Padding]).MoveToOuterDisposeScope();
    }
}
