using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Text;

/// <summary>The stack of CLIP transformer layers (<c>encoder.layers.N</c>).</summary>
internal sealed class ClipEncoder : nn.Module<Tensor, Tensor>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    private readonly ModuleList<ClipEncoderLayer> _layers;

    public ClipEncoder(ClipTextConfig config, Device device, ScalarType dtype) : base(nameof(ClipEncoder))
    {
        _layers = nn.ModuleList(Enumerable.Range(0, config.NumHiddenLayers).Select(_ => new ClipEncoderLayer(config, device, dtype)).ToArray());
        register_module("layers", _layers);
    }

    public int LayerCount => _layers.Count;

    public override Tensor forward(Tensor x) => Forward(x, _layers.Count);

    /// <summary>Runs only the first <paramref name="layerCount"/> (at least one) layers, what clip skip needs.</summary>
    public Tensor Forward(Tensor x, int layerCount)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(layerCount, 1);
        return Forward(x, 0, layerCount);
    }

    /// <summary>Runs layers <paramref name="start"/> to <paramref name="end"/> (exclusive) on <paramref name="x"/>; no layer returns <paramref name="x"/>'s copy.</summary>
    public Tensor Forward(Tensor x, int start, int end)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(start, 0);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(end, _layers.Count);
        ArgumentOutOfRangeException.ThrowIfLessThan(end, start);
        using var scope = NewDisposeScope();
        var h = x;
        for (int i = start; i < end; i++) h = _layers[i].forward(h);
        if (ReferenceEquals(h, x)) h = x.alias();
        return h.MoveToOuterDisposeScope();
    }
}
