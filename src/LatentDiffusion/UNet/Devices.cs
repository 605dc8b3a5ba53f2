using static TorchSharp.torch;

namespace LatentDiffusion.UNet;

/// <summary>Device identity; TorchSharp's <see cref="Device"/> compares by reference.</summary>
internal static class Devices
{
    /// <summary>True when both name the same device; an index of -1 (the current device of that type) matches any index.</summary>
    public static bool Same(Device a, Device b)
        => a.type == b.type && (a.index == b.index || a.index < 0 || b.index < 0);
}
