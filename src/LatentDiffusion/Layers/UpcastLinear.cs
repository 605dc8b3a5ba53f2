using LatentDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Layers;

/// <summary>
/// A linear layer that holds its weights in a narrower dtype than it computes in (float16 weights, float32 arithmetic):
/// every call converts them to the input's dtype, so a model takes half the memory of float32 and computes as float32
/// does. With the float16 values of a float16 file its results are those of <c>nn.Linear</c> in float32, bit for bit.
/// Named (<c>weight</c>, <c>bias</c>) as <c>nn.Linear</c> is, so checkpoints and LoRAs address it the same way.
/// </summary>
internal sealed class UpcastLinear : nn.Module<Tensor, Tensor>
{
    /// <summary>Does nothing: the parameters are registered explicitly under <c>nn.Linear</c>'s names.</summary>
    protected override void RegisterComponents() { }

    private Parameter _weight;
    private Parameter? _bias;

    /// <summary>Creates the layer: <c>[outputSize, inputSize]</c> weights held in <paramref name="storage"/>.</summary>
    public UpcastLinear(long inputSize, long outputSize, bool hasBias, Device device, ScalarType storage, ScalarType compute) : base(nameof(Linear))
    {
        InFeatures = inputSize;
        OutFeatures = outputSize;
        ComputeDType = compute;
        _weight = new Parameter(empty([outputSize, inputSize], storage, device));
        register_parameter("weight", _weight);
        if (hasBias)
        {
            _bias = new Parameter(empty([outputSize], storage, device));
            register_parameter("bias", _bias);
        }
        if (ParameterInitialization.Skipped) return;
        // Initialised as nn.Linear initialises itself, then rounded to the storage dtype.
        using var initial = nn.Linear(inputSize, outputSize, hasBias, device, compute);
        using var noGrad = no_grad();
        _weight.copy_(initial.weight);
        _bias?.copy_(initial.bias!);
    }

    /// <summary>Input features.</summary>
    public long InFeatures { get; }

    /// <summary>Output features.</summary>
    public long OutFeatures { get; }

    /// <summary>The dtype the layer was built to compute in (its inputs' dtype).</summary>
    public ScalarType ComputeDType { get; }

    /// <summary>The weights, <c>[out, in]</c>, in the storage dtype (named as <c>nn.Linear</c>'s, so <c>Module.to</c> finds it).</summary>
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

    /// <summary>The bias, or null.</summary>
    public Parameter? bias
    {
        get => _bias;
        set
        {
            if (ReferenceEquals(value, _bias)) return;
            _bias?.Dispose();
            _bias = value;
            if (_bias is not null) register_parameter("bias", _bias);
        }
    }

    /// <summary>y = x Wᵀ + b, with W and b converted to <paramref name="input"/>'s dtype for this call.</summary>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var w = _weight.to(input.dtype);
        var b = _bias?.to(input.dtype);
        return nn.functional.linear(input, w, b).MoveToOuterDisposeScope();
    }
}
