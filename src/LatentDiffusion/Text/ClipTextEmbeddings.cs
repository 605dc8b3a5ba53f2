using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Text;

/// <summary>CLIP's input: a learned embedding per token plus a learned embedding per position (transformers' <c>CLIPTextEmbeddings</c>).</summary>
internal sealed class ClipTextEmbeddings : nn.Module<Tensor, Tensor>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    private readonly nn.Module<Tensor, Tensor> _tokenEmbedding;
    private readonly nn.Module<Tensor, Tensor> _positionEmbedding;

    public ClipTextEmbeddings(ClipTextConfig config, Device device, ScalarType dtype) : base(nameof(ClipTextEmbeddings))
    {
        _tokenEmbedding = NewEmbedding(config.VocabSize, config.HiddenSize, device, dtype);
        _positionEmbedding = NewEmbedding(config.MaxPositionEmbeddings, config.HiddenSize, device, dtype);
        register_module("token_embedding", _tokenEmbedding);
        register_module("position_embedding", _positionEmbedding);
    }

    // TorchSharp 0.107 builds an nn.Embedding's full table on the CPU even when asked for the meta device; the skeleton
    // that checks a config against the weights (see WeightLoader.BuildChecked) must not allocate from the config's numbers.
    private static nn.Module<Tensor, Tensor> NewEmbedding(int count, int width, Device device, ScalarType dtype)
        => device.type == DeviceType.META ? new MetaEmbedding(count, width, device, dtype) : nn.Embedding(count, width, device: device, dtype: dtype);

    /// <summary>Rows of the token embedding table (the config's <c>vocab_size</c> plus any rows appended since).</summary>
    public long TokenCount => _tokenEmbedding switch
    {
        Embedding e => e.weight!.shape[0],
        MetaEmbedding m => m.Count,
        _ => throw new InvalidOperationException($"Unexpected token embedding module {_tokenEmbedding.GetType().Name}."),
    };

    /// <summary>Appends <paramref name="rows"/> <c>[n, hidden]</c> to the token embedding table (the reference's <c>resize_token_embeddings</c> and row assignment).</summary>
    public void AppendTokens(Tensor rows)
    {
        if (_tokenEmbedding is not Embedding embedding)
            throw new NotSupportedException("A meta-device skeleton only describes shapes; it cannot take new token embeddings.");
        var old = embedding.weight!;
        Parameter table;
        using (no_grad())
        using (var scope = NewDisposeScope())
        {
            var grown = cat([old.detach(), rows.to(old.dtype, old.device)], 0);
            // Detached from every dispose scope, a caller's included: the module owns the new table.
            table = new Parameter(grown, requires_grad: old.requires_grad);
            table.DetachFromDisposeScope();
        }
        // The setter replaces (and releases) the old table.
        embedding.weight = table;
    }

    /// <summary>Drops the rows from <paramref name="count"/> on (undoes <see cref="AppendTokens"/> when a later step of a load fails).</summary>
    public void TruncateTokens(long count)
    {
        if (_tokenEmbedding is not Embedding embedding || count >= embedding.weight!.shape[0]) return;
        var old = embedding.weight!;
        Parameter table;
        using (no_grad())
        using (var scope = NewDisposeScope())
        {
            table = new Parameter(old.detach().narrow(0, 0, count).clone(), requires_grad: old.requires_grad);
            table.DetachFromDisposeScope();
        }
        embedding.weight = table;
    }

    /// <param name="inputIds">int64 <c>[batch, positions]</c> on the weights' device.</param>
    public override Tensor forward(Tensor inputIds)
    {
        using var scope = NewDisposeScope();
        var positions = arange(inputIds.shape[1], dtype: ScalarType.Int64, device: inputIds.device).unsqueeze(0);
        return (_tokenEmbedding.forward(inputIds) + _positionEmbedding.forward(positions)).MoveToOuterDisposeScope();
    }
}

/// <summary>An embedding table's shape on the meta device, named as <see cref="Embedding"/> names it (<c>weight</c>); it cannot run.</summary>
internal sealed class MetaEmbedding : nn.Module<Tensor, Tensor>
{
    private readonly Parameter _weight;

    public long Count { get; }

    public MetaEmbedding(int count, int width, Device device, ScalarType dtype) : base(nameof(MetaEmbedding))
    {
        Count = count;
        _weight = new Parameter(empty(count, width, dtype: dtype, device: device));
        register_parameter("weight", _weight);
    }

    public override Tensor forward(Tensor input) => throw new NotSupportedException("A meta-device skeleton only describes shapes; it cannot run.");
}
