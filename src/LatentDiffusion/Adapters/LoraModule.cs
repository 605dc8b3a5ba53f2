using static TorchSharp.torch;

namespace LatentDiffusion.Adapters;

/// <summary>
/// The low-rank update of one module as a file stores it: <c>down</c> (<c>lora_down</c>, PEFT's <c>lora_A</c>) of shape
/// <c>[rank, in]</c> or <c>[rank, in, kh, kw]</c>, <c>up</c> (<c>lora_up</c>, <c>lora_B</c>) of shape <c>[out, rank]</c>
/// or <c>[out, rank, 1, 1]</c>, and alpha: the module adds scale · alpha / rank · up(down(x)). Float32 on the CPU.
/// </summary>
internal sealed class LoraModule(string key, string component, string name, bool dotted, Tensor down, Tensor up, double alpha) : IDisposable
{
    /// <summary>The module's name in the file, as the errors quote it (<c>lora_unet_..._to_q</c>, <c>unet.down_blocks...to_q</c>).</summary>
    public string Key { get; } = key;

    /// <summary>The model part it belongs to: <c>unet</c>, <c>text_encoder</c> or <c>text_encoder_2</c>.</summary>
    public string Component { get; } = component;

    /// <summary>The name inside the component: the module path with dots (<see cref="Dotted"/>) or kohya's underscores.</summary>
    public string Name { get; } = name;

    /// <summary>True when <see cref="Name"/> is a dotted module path (PEFT), false for kohya's flattened name.</summary>
    public bool Dotted { get; } = dotted;

    /// <summary>The down projection.</summary>
    public Tensor Down { get; } = down;

    /// <summary>The up projection.</summary>
    public Tensor Up { get; } = up;

    /// <summary>Alpha (the rank when the file stores none).</summary>
    public double Alpha { get; } = alpha;

    /// <summary>The rank: the down projection's output width.</summary>
    public long Rank => Down.shape[0];

    /// <summary>Input width the down projection expects.</summary>
    public long InFeatures => Down.shape[1];

    /// <summary>Output width of the up projection.</summary>
    public long OutFeatures => Up.shape[0];

    /// <summary>Frees the tensors.</summary>
    public void Dispose()
    {
        Down.Dispose();
        Up.Dispose();
    }
}
