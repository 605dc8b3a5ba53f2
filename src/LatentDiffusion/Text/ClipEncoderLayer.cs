using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Text;

/// <summary>One pre-norm transformer layer: <c>x + attn(ln1(x))</c>, then <c>x + mlp(ln2(x))</c>.</summary>
internal sealed class ClipEncoderLayer : nn.Module<Tensor, Tensor>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    private readonly LayerNorm _layerNorm1, _layerNorm2;
    private readonly ClipAttention _selfAttn;
    private readonly ClipMlp _mlp;

    public ClipEncoderLayer(ClipTextConfig config, Device device, ScalarType dtype) : base(nameof(ClipEncoderLayer))
    {
        _selfAttn = new ClipAttention(config, device, dtype);
        _layerNorm1 = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype);
        _mlp = new ClipMlp(config, device, dtype);
        _layerNorm2 = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype);
        register_module("self_attn", _selfAttn);
        register_module("layer_norm1", _layerNorm1);
        register_module("mlp", _mlp);
        register_module("layer_norm2", _layerNorm2);
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x + _selfAttn.forward(_layerNorm1.forward(x));
        return (h + _mlp.forward(_layerNorm2.forward(h))).MoveToOuterDisposeScope();
    }
}
