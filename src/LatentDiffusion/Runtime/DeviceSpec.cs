using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Runtime;

/// <summary>Parses device names and checks that the device can be used.</summary>
public static class DeviceSpec
{
    /// <summary>Parses <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>, initialising CUDA when asked for.</summary>
    /// <exception cref="ArgumentException">The name is not one of those forms.</exception>
    /// <exception cref="NotSupportedException">CUDA was asked for but is not available; the message says why.</exception>
    public static Device Parse(string name)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        var text = name.Trim().ToLowerInvariant();
        if (text == "cpu") return CPU;
        if (text == "cuda" || text.StartsWith("cuda:", StringComparison.Ordinal))
        {
            int index = 0;
            if (text.Length > 4 && (!int.TryParse(text[5..], out index) || index < 0))
                throw new ArgumentException($"Device '{name}' is not valid: expected cpu, cuda or cuda:N.", nameof(name));
            if (!torch.TryInitializeDeviceType(DeviceType.CUDA) || !cuda.is_available())
                throw new NotSupportedException($"Device '{name}' was asked for but CUDA is not available: the app needs a CUDA TorchSharp backend (TorchSharp-cuda-linux / -windows), or {TorchRuntimeOptions.LibTorchEnvironmentVariable} pointing at a CUDA libtorch, and an NVIDIA driver.");
            int count = cuda.device_count();
            if (index >= count) throw new ArgumentException($"Device '{name}' does not exist: {count} CUDA device(s) found.", nameof(name));
            return torch.device(DeviceType.CUDA, index);
        }
        throw new ArgumentException($"Device '{name}' is not valid: expected cpu, cuda or cuda:N.", nameof(name));
    }

    /// <summary>Parses <c>float32</c>, <c>float16</c>/<c>fp16</c>/<c>half</c>, <c>bfloat16</c>/<c>bf16</c>.</summary>
    /// <exception cref="ArgumentException">Another name.</exception>
    public static ScalarType ParseDType(string name) => name.Trim().ToLowerInvariant() switch
    {
        "float32" or "fp32" or "float" => ScalarType.Float32,
        "float16" or "fp16" or "half" => ScalarType.Float16,
        "bfloat16" or "bf16" => ScalarType.BFloat16,
        _ => throw new ArgumentException($"DType '{name}' is not supported: expected float32, float16 or bfloat16.", nameof(name)),
    };
}
