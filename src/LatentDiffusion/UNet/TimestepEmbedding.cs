using LatentDiffusion.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.UNet;

/// <summary>
/// The learned time embedding: a two-layer MLP over the sinusoidal timestep features, optionally with an extra
/// condition (the guidance-scale embedding of distilled models) added to the features first.
/// </summary>
public sealed class TimestepEmbedding : nn.Module<Tensor, Tensor?, Tensor>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    private readonly nn.Module<Tensor, Tensor> _linear1;
    private readonly nn.Module<Tensor, Tensor> _linear2;
    private readonly nn.Module<Tensor, Tensor>? _condProj;
    private readonly Func<Tensor, Tensor> _act;
    private readonly Func<Tensor, Tensor>? _postAct;

    /// <summary>Creates the MLP.</summary>
    /// <param name="inChannels">Width of the timestep features.</param>
    /// <param name="timeEmbedDim">Width of the embedding.</param>
    /// <param name="actFn">Activation between the layers (a config name such as <c>silu</c>).</param>
    /// <param name="postActFn">Activation after the second layer, or null.</param>
    /// <param name="condProjDim">Width of the optional extra condition, or null.</param>
    /// <param name="device">Where the weights live.</param>
    /// <param name="dtype">The weights' dtype.</param>
    public TimestepEmbedding(int inChannels, int timeEmbedDim, string actFn, string? postActFn, int? condProjDim, Device device, ScalarType dtype)
        : base(nameof(TimestepEmbedding))
    {
        _linear1 = ModuleBuilder.Linear(inChannels, timeEmbedDim, hasBias: true, device: device, dtype: dtype);
        register_module("linear_1", _linear1);
        if (condProjDim is int c)
        {
            _condProj = ModuleBuilder.Linear(c, inChannels, hasBias: false, device: device, dtype: dtype);
            register_module("cond_proj", _condProj);
        }
        _act = Activation.InPlace(actFn);
        _linear2 = ModuleBuilder.Linear(timeEmbedDim, timeEmbedDim, hasBias: true, device: device, dtype: dtype);
        register_module("linear_2", _linear2);
        _postAct = postActFn is null ? null : Activation.InPlace(postActFn);
    }

    /// <summary>Embeds timestep features <c>[n, inChannels]</c> (plus <paramref name="condition"/> <c>[n, condProjDim]</c> when given).</summary>
    public override Tensor forward(Tensor sample, Tensor? condition)
    {
        using var scope = NewDisposeScope();
        if (condition is not null)
        {
            if (_condProj is null) throw new ArgumentException("This time embedding has no condition projection (time_cond_proj_dim is null), so it takes no timestep condition.", nameof(condition));
            sample = sample + _condProj.call(condition);
        }
        var h = _linear2.call(_act(_linear1.call(sample)));
        if (_postAct is not null) h = _postAct(h);
        return h.MoveToOuterDisposeScope();
    }
}
