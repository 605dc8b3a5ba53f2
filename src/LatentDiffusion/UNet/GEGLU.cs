using LatentDiffusion.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.UNet;

/// <summary>Gated GELU (Shazeer 2020): one projection to twice the width, the first half gated by GELU of the second.</summary>
public sealed class GEGLU : nn.Module<Tensor, Tensor>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    private readonly nn.Module<Tensor, Tensor> _proj;

    /// <summary>Creates the gate.</summary>
    /// <param name="dimIn">Input width.</param>
    /// <param name="dimOut">Output width (the projection produces twice this).</param>
    /// <param name="device">Where the weights live.</param>
    /// <param name="dtype">The weights' dtype.</param>
    public GEGLU(int dimIn, int dimOut, Device device, ScalarType dtype) : base(nameof(GEGLU))
    {
        _proj = ModuleBuilder.Linear(dimIn, dimOut * 2, hasBias: true, device: device, dtype: dtype);
        register_module("proj", _proj);
    }

    /// <summary><c>[..., dimIn]</c> → <c>[..., dimOut]</c>.</summary>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var halves = _proj.call(input).chunk(2, -1);
        // Exact (erf) GELU, as the reference; computed into a new tensor, then gated in place.
        var gate = nn.functional.gelu(halves[1]);
        // In place only without autograd: the product's backward needs the gate's values.
        var gated = gate.requires_grad && is_grad_enabled() ? gate * halves[0] : gate.mul_(halves[0]);
        return gated.MoveToOuterDisposeScope();
    }
}
