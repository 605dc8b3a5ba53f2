using LatentDiffusion.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.UNet;

/// <summary>The transformer block's position-wise feed-forward network: GEGLU to four times the width, then back.</summary>
public sealed class FeedForward : nn.Module<Tensor, Tensor>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    private readonly GEGLU _gate;
    private readonly nn.Module<Tensor, Tensor> _out;

    /// <summary>Creates the network.</summary>
    /// <param name="dim">Width of the tokens.</param>
    /// <param name="device">Where the weights live.</param>
    /// <param name="dtype">The weights' dtype.</param>
    /// <param name="mult">Hidden width over <paramref name="dim"/>.</param>
    public FeedForward(int dim, Device device, ScalarType dtype, int mult = 4) : base(nameof(FeedForward))
    {
        int inner = dim * mult;
        _gate = new GEGLU(dim, inner, device, dtype);
        _out = ModuleBuilder.Linear(inner, dim, hasBias: true, device: device, dtype: dtype);
        // The reference's net is [GEGLU, Dropout, Linear].
        register_module("net", nn.ModuleList<nn.Module<Tensor, Tensor>>(_gate, nn.Dropout(0.0), _out));
    }

    /// <summary><c>[..., dim]</c> → <c>[..., dim]</c>.</summary>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        return _out.call(_gate.forward(input)).MoveToOuterDisposeScope();
    }
}
