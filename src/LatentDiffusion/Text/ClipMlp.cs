using LatentDiffusion.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Text;

/// <summary>A CLIP layer's feed-forward block: <c>fc2(act(fc1(x)))</c>.</summary>
internal sealed class ClipMlp : nn.Module<Tensor, Tensor>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    private readonly nn.Module<Tensor, Tensor> _fc1, _fc2;
    private readonly ClipActivation _activation;

    public ClipMlp(ClipTextConfig config, Device device, ScalarType dtype) : base(nameof(ClipMlp))
    {
        _activation = config.HiddenAct;
        _fc1 = ModuleBuilder.Linear(config.HiddenSize, config.IntermediateSize, hasBias: true, device: device, dtype: dtype);
        _fc2 = ModuleBuilder.Linear(config.IntermediateSize, config.HiddenSize, hasBias: true, device: device, dtype: dtype);
        register_module("fc1", _fc1);
        register_module("fc2", _fc2);
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = _fc1.call(x);
        h = _activation switch
        {
            // OpenAI's sigmoid approximation of GELU, which the SD 1.x text encoder was trained with.
            ClipActivation.QuickGelu => h * sigmoid(h * 1.702),
            _ => nn.functional.gelu(h),
        };
        return _fc2.call(h).MoveToOuterDisposeScope();
    }
}
