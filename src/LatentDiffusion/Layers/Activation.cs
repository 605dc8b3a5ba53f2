using static TorchSharp.torch;

namespace LatentDiffusion.Layers;

/// <summary>The activations the reference's configs name (<c>act_fn</c> and friends), by their config names.</summary>
internal static class Activation
{
    /// <summary>Names accepted in configs.</summary>
    public static readonly IReadOnlyList<string> Supported = ["silu", "swish", "mish", "gelu", "relu"];

    /// <summary>
    /// The activation called <paramref name="name"/>. The returned function may work in place: pass only a tensor that
    /// nothing else reads afterwards (every caller here passes a freshly computed intermediate).
    /// </summary>
    public static Func<Tensor, Tensor> InPlace(string name)
    {
        Func<Tensor, Tensor> inPlace = name switch
        {
            "silu" or "swish" => x => nn.functional.silu(x, inplace: true),
            "mish" => x => nn.functional.mish(x, inplace: true),
            "gelu" => x => nn.functional.gelu(x, inplace: true),
            "relu" => x => nn.functional.relu(x, inplace: true),
            _ => throw new NotSupportedException($"Activation '{name}' is not supported (supported: {string.Join(", ", Supported)})."),
        };
        var outOfPlace = OutOfPlace(name);
        // While training, autograd needs the activation's input for the backward pass, so overwriting it is not allowed.
        return x => x.requires_grad && is_grad_enabled() ? outOfPlace(x) : inPlace(x);
    }

    /// <summary>The activation called <paramref name="name"/>, leaving its input untouched.</summary>
    public static Func<Tensor, Tensor> OutOfPlace(string name) => name switch
    {
        "silu" or "swish" => x => nn.functional.silu(x),
        "mish" => x => nn.functional.mish(x),
        "gelu" => x => nn.functional.gelu(x),
        "relu" => x => nn.functional.relu(x),
        _ => throw new NotSupportedException($"Activation '{name}' is not supported (supported: {string.Join(", ", Supported)})."),
    };
}
