using LatentDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Layers;

/// <summary>
/// A linear layer whose weights are held narrower than it computes (see <see cref="UpcastLayer"/>). With the float16
/// values of a float16 file its results are those of <c>nn.Linear</c> in float32, bit for bit.
/// </summary>
internal sealed class UpcastLinear : UpcastLayer
{
    /// <summary>Creates the layer: <c>[outputSize, inputSize]</c> weights held in <paramref name="storage"/>.</summary>
    public UpcastLinear(long inputSize, long outputSize, bool hasBias, Device device, ScalarType storage, ScalarType compute)
        : base(nameof(Linear), [outputSize, inputSize], hasBias ? outputSize : null, device, storage, compute)
    {
        InFeatures = inputSize;
        OutFeatures = outputSize;
        if (ParameterInitialization.Skipped) return;
        // Initialised as nn.Linear initialises itself, then rounded to the storage dtype.
        using var initial = nn.Linear(inputSize, outputSize, hasBias, device, compute);
        InitialiseFrom(initial.weight, initial.bias);
    }

    /// <summary>Input features.</summary>
    public long InFeatures { get; }

    /// <summary>Output features.</summary>
    public long OutFeatures { get; }

    /// <inheritdoc />
    protected override Tensor Apply(Tensor input, Tensor weight, Tensor? bias) => nn.functional.linear(input, weight, bias);
}
