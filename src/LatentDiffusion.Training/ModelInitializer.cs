using LatentDiffusion.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Training;

/// <summary>
/// Deterministic fresh weights for training from scratch. The models' constructors leave some weights uninitialised (they
/// are normally loaded), and TorchSharp's own initialisation draws from the global generator; this draws from a seeded one.
/// </summary>
public static class ModelInitializer
{
    /// <summary>
    /// Initialises every parameter of <paramref name="module"/> from <paramref name="seed"/>: linear and convolution
    /// weights and biases uniform in ±1/sqrt(fan_in) (PyTorch's default), embeddings normal with standard deviation 0.02
    /// (CLIP's), normalisation scales 1 and shifts 0.
    /// </summary>
    public static void Initialize(nn.Module module, long seed)
    {
        ArgumentNullException.ThrowIfNull(module);
        using var noGrad = no_grad();
        using var generator = new Generator(unchecked((ulong)seed));
        foreach (var (_, child) in module.named_modules())
        {
            switch (child)
            {
                case Linear linear:
                    Uniform(linear.weight!, linear.weight!.shape[1], generator);
                    if (linear.bias is not null) Uniform(linear.bias, linear.weight!.shape[1], generator);
                    break;
                case Conv2d conv:
                    long fanIn = conv.weight!.shape[1] * conv.weight.shape[2] * conv.weight.shape[3];
                    Uniform(conv.weight, fanIn, generator);
                    if (conv.bias is not null) Uniform(conv.bias, fanIn, generator);
                    break;
                case UpcastLayer layer:
                    // fan_in: every weight dimension but the first (in, or in × k × k), as for Linear and Conv2d above.
                    long layerFanIn = layer.weight.shape.Skip(1).Aggregate(1L, (a, b) => a * b);
                    Uniform(layer.weight, layerFanIn, generator);
                    if (layer.bias is not null) Uniform(layer.bias, layerFanIn, generator);
                    break;
                case Embedding embedding:
                    Fill(embedding.weight!, randn(embedding.weight!.shape, ScalarType.Float32, CPU, generator: generator) * 0.02);
                    break;
                case LayerNorm norm:
                    norm.weight?.fill_(1.0);
                    norm.bias?.zero_();
                    break;
                case GroupNorm norm:
                    norm.weight?.fill_(1.0);
                    norm.bias?.zero_();
                    break;
            }
        }
    }

    private static void Uniform(Tensor target, long fanIn, Generator generator)
    {
        double bound = 1.0 / Math.Sqrt(Math.Max(1, fanIn));
        using var u = rand(target.shape, ScalarType.Float32, CPU, generator: generator);
        using var scaled = u * (2 * bound) - bound;
        Fill(target, scaled);
    }

    private static void Fill(Tensor target, Tensor values)
    {
        target.copy_(values);
        values.Dispose();
    }
}
