using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Text;

/// <summary>CLIP's input: a learned embedding per token plus a learned embedding per position (transformers' <c>CLIPTextEmbeddings</c>).</summary>
internal sealed class ClipTextEmbeddings : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> token_embedding;
    private readonly nn.Module<Tensor, Tensor> position_embedding;

    public ClipTextEmbeddings(ClipTextConfig config, Device device, ScalarType dtype) : base(nameof(ClipTextEmbeddings))
    {
        token_embedding = NewEmbedding(config.VocabSize, config.HiddenSize, device, dtype);
        position_embedding = NewEmbedding(config.MaxPositionEmbeddings, config.HiddenSize, device, dtype);
        register_module("token_embedding", token_embedding);
        register_module("position_embedding", position_embedding);
    }

    // TorchSharp 0.107 builds an nn.Embedding's full table on the CPU even when asked for the meta device; the skeleton
    // that checks a config against the weights (see WeightLoader.BuildChecked) must not allocate from the config's numbers.
    private static nn.Module<Tensor, Tensor> NewEmbedding(int count, int width, Device device, ScalarType dtype)
        => device.type == DeviceType.META ? new MetaEmbedding(count, width, device, dtype) : nn.Embedding(count, width, device: device, dtype: dtype);

    /// <param name="inputIds">int64 <c>[batch, positions]</c> on the weights' device.</param>
    public override Tensor forward(Tensor inputIds)
    {
        using var scope = NewDisposeScope();
        var positions = arange(inputIds.shape[1], dtype: ScalarType.Int64, device: inputIds.device).unsqueeze(0);
        return (token_embedding.forward(inputIds) + position_embedding.forward(positions)).MoveToOuterDisposeScope();
    }
}

/// <summary>An embedding table's shape on the meta device, named as <see cref="Embedding"/> names it (<c>weight</c>); it cannot run.</summary>
internal sealed class MetaEmbedding : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;

    public MetaEmbedding(int count, int width, Device device, ScalarType dtype) : base(nameof(MetaEmbedding))
    {
        weight = new Parameter(empty(count, width, dtype: dtype, device: device));
        register_parameter("weight", weight);
    }

    public override Tensor forward(Tensor input) => throw new NotSupportedException("A meta-device skeleton only describes shapes; it cannot run.");
}
