using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Text;

/// <summary>One pre-norm transformer layer: <c>x + attn(ln1(x))</c>, then <c>x + mlp(ln2(x))</c>.</summary>
internal sealed class ClipEncoderLayer : nn.Module<Tensor, Tensor>
{
    private readonly LayerNorm layer_norm1, layer_norm2;
    private readonly ClipAttention self_attn;
    private readonly ClipMlp mlp;

    public ClipEncoderLayer(ClipTextConfig config, Device device, ScalarType dtype) : base(nameof(ClipEncoderLayer))
    {
        self_attn = new ClipAttention(config, device, dtype);
        layer_norm1 = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype);
        mlp = new ClipMlp(config, device, dtype);
        layer_norm2 = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype);
        register_module("self_attn", self_attn);
        register_module("layer_norm1", layer_norm1);
        register_module("mlp", mlp);
        register_module("layer_norm2", layer_norm2);
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x + self_attn.forward(layer_norm1.forward(x));
        return (h + mlp.forward(layer_norm2.forward(h))).MoveToOuterDisposeScope();
    }
}
