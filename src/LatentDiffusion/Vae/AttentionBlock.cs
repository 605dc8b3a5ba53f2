using LatentDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Vae;

/// <summary>
/// The single-head spatial self-attention of the autoencoder's mid block (the reference's <c>Attention</c> built from the
/// deprecated <c>AttentionBlock</c>): every pixel attends to every other, after a group norm, with a residual connection.
/// Parameter names are the current ones (<c>to_q</c>, <c>to_k</c>, <c>to_v</c>, <c>to_out.0</c>); older files call them
/// <c>query</c>, <c>key</c>, <c>value</c>, <c>proj_attn</c> and are renamed on loading.
/// </summary>
internal sealed class AttentionBlock : nn.Module<Tensor, Tensor>
{
    private readonly GroupNorm group_norm;
    private readonly Linear to_q;
    private readonly Linear to_k;
    private readonly Linear to_v;
    private readonly ModuleList<nn.Module<Tensor, Tensor>> to_out;
    private readonly int _heads;

    /// <summary>Builds the block; <paramref name="headDim"/> is the reference's <c>attention_head_dim</c> (the channel count, so one head).</summary>
    public AttentionBlock(int channels, int headDim, int groups, double eps, Device device, ScalarType dtype) : base(nameof(AttentionBlock))
    {
        if (headDim <= 0 || channels % headDim != 0)
            throw new ArgumentException($"Attention over {channels} channels cannot be split into heads of {headDim}.", nameof(headDim));
        _heads = channels / headDim;
        group_norm = GroupNormalization.Create(groups, channels, eps, device, dtype);
        to_q = nn.Linear(channels, channels, hasBias: true, device: device, dtype: dtype);
        to_k = nn.Linear(channels, channels, hasBias: true, device: device, dtype: dtype);
        to_v = nn.Linear(channels, channels, hasBias: true, device: device, dtype: dtype);
        // Index 1 of the reference's to_out is a parameterless dropout; only the projection at index 0 carries weights.
        to_out = nn.ModuleList<nn.Module<Tensor, Tensor>>(nn.Linear(channels, channels, hasBias: true, device: device, dtype: dtype));
        register_module("group_norm", group_norm);
        register_module("to_q", to_q);
        register_module("to_k", to_k);
        register_module("to_v", to_v);
        register_module("to_out", to_out);
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        long b = input.shape[0], c = input.shape[1], h = input.shape[2], w = input.shape[3];
        // Pixels become tokens: [b, c, h, w] → [b, h·w, c].
        var tokens = group_norm.forward(input).view(b, c, h * w).transpose(1, 2);
        Tensor Heads(Tensor x) => x.view(b, h * w, _heads, c / _heads).transpose(1, 2);
        var q = Heads(to_q.forward(tokens));
        var k = Heads(to_k.forward(tokens));
        var v = Heads(to_v.forward(tokens));
        var attended = nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c);
        var projected = to_out[0].forward(attended);
        var output = projected.transpose(1, 2).reshape(b, c, h, w) + input;
        return output.MoveToOuterDisposeScope();
    }
}
