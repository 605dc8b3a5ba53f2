using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Text;

/// <summary>Multi-head self-attention of a CLIP text layer, causal: each token sees only itself and the tokens before it.</summary>
internal sealed class ClipAttention : nn.Module<Tensor, Tensor>
{
    private readonly Linear q_proj, k_proj, v_proj, out_proj;
    private readonly int _heads;

    public ClipAttention(ClipTextConfig config, Device device, ScalarType dtype) : base(nameof(ClipAttention))
    {
        int d = config.HiddenSize;
        _heads = config.NumAttentionHeads;
        q_proj = nn.Linear(d, d, hasBias: true, device: device, dtype: dtype);
        k_proj = nn.Linear(d, d, hasBias: true, device: device, dtype: dtype);
        v_proj = nn.Linear(d, d, hasBias: true, device: device, dtype: dtype);
        out_proj = nn.Linear(d, d, hasBias: true, device: device, dtype: dtype);
        register_module("q_proj", q_proj);
        register_module("k_proj", k_proj);
        register_module("v_proj", v_proj);
        register_module("out_proj", out_proj);
    }

    /// <param name="x"><c>[batch, positions, hidden]</c>.</param>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], n = x.shape[1], d = x.shape[2];
        Tensor Heads(Tensor t) => t.view(b, n, _heads, d / _heads).transpose(1, 2);
        // The default scale 1/sqrt(head_dim) is CLIP's.
        var o = nn.functional.scaled_dot_product_attention(Heads(q_proj.forward(x)), Heads(k_proj.forward(x)), Heads(v_proj.forward(x)), null, 0.0, true);
        return out_proj.forward(o.transpose(1, 2).reshape(b, n, d)).MoveToOuterDisposeScope();
    }
}
