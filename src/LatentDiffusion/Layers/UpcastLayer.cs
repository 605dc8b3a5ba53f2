using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Layers;

/// <summary>
/// A layer that holds its <c>weight</c> and <c>bias</c> in a narrower dtype than it computes in (float16 weights, float32
/// arithmetic): every call converts them to the input's dtype, so a model takes half the memory of float32 and computes
/// as float32 does. The parameters are named as TorchSharp's layers name theirs (public <c>weight</c> and <c>bias</c>
/// properties, so checkpoints, LoRAs and <c>Module.to</c> find them the same way).
/// </summary>
internal abstract class UpcastLayer : nn.Module<Tensor, Tensor>
{
    /// <summary>Does nothing: the parameters are registered explicitly under TorchSharp's names.</summary>
    protected override void RegisterComponents() { }

    private Parameter _weight;
    private Parameter? _bias;

    /// <summary>Allocates (without writing) the weights and the optional bias in <paramref name="storage"/>.</summary>
    protected UpcastLayer(string name, long[] weightShape, long? biasLength, Device device, ScalarType storage, ScalarType compute) : base(name)
    {
        ComputeDType = compute;
        _weight = new Parameter(empty(weightShape, storage, device));
        register_parameter("weight", _weight);
        if (biasLength is { } n)
        {
            _bias = new Parameter(empty([n], storage, device));
            register_parameter("bias", _bias);
        }
    }

    /// <summary>The dtype the layer was built to compute in (its inputs' dtype).</summary>
    public ScalarType ComputeDType { get; }

    /// <summary>The weights, in the storage dtype.</summary>
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

    /// <summary>The bias in the storage dtype, or null.</summary>
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

    /// <summary>Copies a freshly initialised TorchSharp layer's values (rounded to the storage dtype) into this one's.</summary>
    protected void InitialiseFrom(Parameter weight, Parameter? bias)
    {
        using var noGrad = no_grad();
        _weight.copy_(weight);
        if (bias is not null) _bias?.copy_(bias);
    }

    /// <summary>The layer's operation on <paramref name="input"/> with the weights and bias converted to its dtype for this call.</summary>
    public sealed override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        return Apply(input, _weight.to(input.dtype), _bias?.to(input.dtype)).MoveToOuterDisposeScope();
    }

    /// <summary>The layer's operation with weights already in the input's dtype.</summary>
    protected abstract Tensor Apply(Tensor input, Tensor weight, Tensor? bias);
}
