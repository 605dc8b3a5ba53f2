using LatentDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Layers;

/// <summary>
/// Builds the linear and convolution layers of the model parts:
/// <list type="bullet">
/// <item>TorchSharp's <c>nn.Linear</c> / <c>nn.Conv2d</c>, initialised as TorchSharp initialises them;</item>
/// <item>inside <see cref="ParameterInitialization.Skip"/> (a loader about to overwrite every weight), the same with storage
/// allocated but not written, so that loading does not first draw hundreds of millions of random numbers;</item>
/// <item>inside <see cref="WeightStorage.Use"/> with a dtype other than the compute dtype, <see cref="UpcastLinear"/> /
/// <see cref="UpcastConv2d"/>, which hold their weights in that dtype and compute in the compute dtype.</item>
/// </list>
/// </summary>
internal static class ModuleBuilder
{
    private static readonly Device Meta = new(DeviceType.META);

    /// <summary>A linear layer (<c>nn.Linear</c>, or <see cref="UpcastLinear"/>).</summary>
    public static nn.Module<Tensor, Tensor> Linear(long inputSize, long outputSize, bool hasBias = true, Device? device = null, ScalarType? dtype = null)
    {
        var compute = dtype ?? get_default_dtype();
        if (WeightStorage.DType is { } storage && storage != compute)
            return new UpcastLinear(inputSize, outputSize, hasBias, device ?? CPU, storage, compute);
        if (!ParameterInitialization.Skipped) return nn.Linear(inputSize, outputSize, hasBias, device, dtype);
        var weight = Allocate([outputSize, inputSize], device, compute);
        var bias = hasBias ? Allocate([outputSize], device, compute) : null;
        return nn.Linear(weight, bias);
    }

    /// <summary>A square-kernel 2-D convolution (<c>nn.Conv2d</c>, or <see cref="UpcastConv2d"/>).</summary>
    public static nn.Module<Tensor, Tensor> Conv2d(long inChannels, long outChannels, long kernelSize, long stride = 1, long padding = 0, Device? device = null, ScalarType? dtype = null)
    {
        var compute = dtype ?? get_default_dtype();
        if (WeightStorage.DType is { } storage && storage != compute)
            return new UpcastConv2d(inChannels, outChannels, kernelSize, stride, padding, device ?? CPU, storage, compute);
        if (!ParameterInitialization.Skipped)
            return nn.Conv2d(inChannels, outChannels, kernelSize, stride: stride, padding: padding, device: device, dtype: dtype);
        // Built on the meta device (its initialisation writes nothing there), then given real, unwritten storage.
        var conv = nn.Conv2d(inChannels, outChannels, kernelSize, stride: stride, padding: padding, device: Meta, dtype: dtype);
        conv.weight = Allocate([outChannels, inChannels, kernelSize, kernelSize], device, compute);
        conv.bias = Allocate([outChannels], device, compute);
        return conv;
    }

    private static Parameter Allocate(long[] shape, Device? device, ScalarType dtype) => new(empty(shape, dtype, device ?? CPU));
}
