using LatentDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Layers;

/// <summary>
/// Builds TorchSharp's parameterised modules for the model parts: initialised as TorchSharp initialises them, or, inside
/// <see cref="ParameterInitialization.Skip"/> (a loader about to overwrite every weight), with storage allocated but not
/// written, so that loading does not first draw hundreds of millions of random numbers.
/// </summary>
internal static class ModuleBuilder
{
    private static readonly Device Meta = new(DeviceType.META);

    /// <summary>A linear layer (<c>nn.Linear</c>).</summary>
    public static Linear Linear(long inputSize, long outputSize, bool hasBias = true, Device? device = null, ScalarType? dtype = null)
    {
        if (!ParameterInitialization.Skipped) return nn.Linear(inputSize, outputSize, hasBias, device, dtype);
        var weight = Allocate([outputSize, inputSize], device, dtype);
        var bias = hasBias ? Allocate([outputSize], device, dtype) : null;
        return nn.Linear(weight, bias);
    }

    /// <summary>A square-kernel 2-D convolution (<c>nn.Conv2d</c>).</summary>
    public static Conv2d Conv2d(long inChannels, long outChannels, long kernelSize, long stride = 1, long padding = 0, Device? device = null, ScalarType? dtype = null)
    {
        if (!ParameterInitialization.Skipped)
            return nn.Conv2d(inChannels, outChannels, kernelSize, stride: stride, padding: padding, device: device, dtype: dtype);
        // Built on the meta device (its initialisation writes nothing there), then given real, unwritten storage.
        var conv = nn.Conv2d(inChannels, outChannels, kernelSize, stride: stride, padding: padding, device: Meta, dtype: dtype);
        conv.weight = Allocate([outChannels, inChannels, kernelSize, kernelSize], device, dtype);
        conv.bias = Allocate([outChannels], device, dtype);
        return conv;
    }

    private static Parameter Allocate(long[] shape, Device? device, ScalarType? dtype)
        => new(empty(shape, dtype ?? get_default_dtype(), device ?? CPU));
}
