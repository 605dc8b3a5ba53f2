using LatentDiffusion.Layers;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.UNet;

/// <summary>
/// An encoder stage of the UNet: residual layers (with spatial transformers in the cross-attention variant) and an
/// optional down-sampler. Returns the stage's output and the skip connections it hands to the decoder, in order
/// (the last skip is the output itself).
/// </summary>
public abstract class UNetDownBlock : nn.Module<Tensor, Tensor, CrossAttentionContext?, (Tensor Output, Tensor[] Skips)>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    /// <summary>Creates the module.</summary>
    protected UNetDownBlock(string name) : base(name) { }
}

/// <summary>
/// A decoder stage of the UNet: residual layers each taking one skip connection concatenated on the channels (with
/// spatial transformers in the cross-attention variant) and an optional up-sampler.
/// </summary>
public abstract class UNetUpBlock : nn.Module<Tensor, IReadOnlyList<Tensor>, Tensor, CrossAttentionContext?, long[]?, Tensor>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    /// <summary>Creates the module.</summary>
    protected UNetUpBlock(string name) : base(name) { }

    /// <summary>How many skip connections the stage consumes (one per residual layer).</summary>
    public abstract int SkipCount { get; }
}

/// <summary>The channel bookkeeping shared by the decoder stages.</summary>
internal static class UpBlockChannels
{
    /// <summary>
    /// Input width of residual layer <paramref name="i"/>: the previous hidden state (from the stage before for the first
    /// layer) plus its skip, which for the last layer comes from the encoder stage one level up.
    /// </summary>
    public static int ResnetInput(int i, int numLayers, int inChannels, int outChannels, int prevOutputChannels)
        => (i == 0 ? prevOutputChannels : outChannels) + (i == numLayers - 1 ? inChannels : outChannels);
}
