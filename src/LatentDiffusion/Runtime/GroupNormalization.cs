using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Runtime;

/// <summary>Group normalisation layers with their parameters in a defined state.</summary>
internal static class GroupNormalization
{
    /// <summary>
    /// A GroupNorm on <paramref name="device"/> in <paramref name="dtype"/>, scale 1 and shift 0 as in PyTorch. TorchSharp
    /// 0.107 leaves the affine parameters uninitialised when a device and dtype are given, which only loaded weights
    /// would hide; a freshly built model must still compute something finite.
    /// </summary>
    public static GroupNorm Create(int groups, int channels, double eps, Device device, ScalarType dtype)
    {
        var norm = nn.GroupNorm(groups, channels, eps, affine: true, device: device, dtype: dtype);
        using (no_grad())
        {
            norm.weight!.fill_(1.0);
            norm.bias!.zero_();
        }
        return norm;
    }
}
