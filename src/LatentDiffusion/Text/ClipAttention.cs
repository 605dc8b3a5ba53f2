using LatentDiffusion.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Text;

/// <summary>Multi-head self-attention of a CLIP text layer, causal: each token sees only itself and the tokens before it.</summary>
internal sealed class ClipAttention : nn.Module<Tensor, Tensor>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    private readonly nn.Module<Tensor, Tensor> _qProj, _kProj, _vProj, _outProj;
    private readonly int _heads;

    public ClipAttention(ClipTextConfig config, Device device, ScalarType dtype) : base(nameof(ClipAttention))
    {
        int d = config.HiddenSize;
        _heads = config.NumAttentionHeads;
        _qProj = ModuleBuilder.Linear(d, d, hasBias: true, device: device, dtype: dtype);
        _kProj = ModuleBuilder.Linear(d, d, hasBias: true, device: device, dtype: dtype);
        _vProj = ModuleBuilder.Linear(d, d, hasBias: true, device: device, dtype: dtype);
        _outProj = ModuleBuilder.Linear(d, d, hasBias: true, device: device, dtype: dtype);
        register_module("q_proj", _qProj);
        register_module("k_proj", _kProj);
        register_module("v_proj", _vProj);
        register_module("out_proj", _outProj);
    }

    /// <param name="x"><c>[batch, positions, hidden]</c>.</param>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], n = x.shape[1], d = x.shape[2];
        Tensor Heads(Tensor t) => t.view(b, n, _heads, d / _heads).transpose(1, 2);
        // The default scale 1/sqrt(head_dim) is CLIP's.
        var o = nn.functional.scaled_dot_product_attention(Heads(_qProj.call(x)), Heads(_kProj.call(x)), Heads(_vProj.call(x)), null, 0.0, true);
        return _outProj.call(o.transpose(1, 2).reshape(b, n, d)).MoveToOuterDisposeScope();
    }
}
