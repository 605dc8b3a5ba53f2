using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Text;

/// <summary>The stack of CLIP transformer layers (<c>encoder.layers.N</c>).</summary>
internal sealed class ClipEncoder : nn.Module<Tensor, Tensor>
{
    private readonly ModuleList<ClipEncoderLayer> layers;

    public ClipEncoder(ClipTextConfig config, Device device, ScalarType dtype) : base(nameof(ClipEncoder))
    {
        layers = nn.ModuleList(Enumerable.Range(0, config.NumHiddenLayers).Select(_ => new ClipEncoderLayer(config, device, dtype)).ToArray());
        register_module("layers", layers);
    }

    public int LayerCount => layers.Count;

    public override Tensor forward(Tensor x) => Forward(x, layers.Count);

    /// <summary>Runs only the first <paramref name="layerCount"/> (at least one) layers, what clip skip needs.</summary>
    public Tensor Forward(Tensor x, int layerCount)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(layerCount, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(layerCount, layers.Count);
        using var scope = NewDisposeScope();
        var h = layers[0].forward(x);
        for (int i = 1; i < layerCount; i++) h = layers[i].forward(h);
        return h.MoveToOuterDisposeScope();
    }
}
