using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Text;

/// <summary>CLIP's input: a learned embedding per token plus a learned embedding per position (transformers' <c>CLIPTextEmbeddings</c>).</summary>
internal sealed class ClipTextEmbeddings : nn.Module<Tensor, Tensor>
{
    private readonly Embedding token_embedding;
    private readonly Embedding position_embedding;

    public ClipTextEmbeddings(ClipTextConfig config, Device device, ScalarType dtype) : base(nameof(ClipTextEmbeddings))
    {
        token_embedding = nn.Embedding(config.VocabSize, config.HiddenSize, device: device, dtype: dtype);
        position_embedding = nn.Embedding(config.MaxPositionEmbeddings, config.HiddenSize, device: device, dtype: dtype);
        register_module("token_embedding", token_embedding);
        register_module("position_embedding", position_embedding);
    }

    /// <param name="inputIds">int64 <c>[batch, positions]</c> on the weights' device.</param>
    public override Tensor forward(Tensor inputIds)
    {
        using var scope = NewDisposeScope();
        var positions = arange(inputIds.shape[1], dtype: ScalarType.Int64, device: inputIds.device).unsqueeze(0);
        return (token_embedding.forward(inputIds) + position_embedding.forward(positions)).MoveToOuterDisposeScope();
    }
}
