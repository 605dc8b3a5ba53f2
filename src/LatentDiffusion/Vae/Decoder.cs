using LatentDiffusion.Layers;
using LatentDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Vae;

/// <summary>
/// The autoencoder's decoder: latents <c>[b, latent_channels, h, w]</c> (after <c>post_quant_conv</c>) → image
/// <c>[b, out_channels, h·f, w·f]</c>. It mirrors the encoder, widest level first.
/// </summary>
public sealed class Decoder : nn.Module<Tensor, Tensor>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    private readonly nn.Module<Tensor, Tensor> _convIn;
    private readonly UNetMidBlock2D _midBlock;
    private readonly ModuleList<UpDecoderBlock2D> _upBlocks;
    private readonly GroupNorm _convNormOut;
    private readonly nn.Module<Tensor, Tensor> _convOut;

    /// <summary>Builds the decoder described by <paramref name="config"/> on <paramref name="device"/> in <paramref name="dtype"/>.</summary>
    public Decoder(AutoencoderKLConfig config, Device device, ScalarType dtype) : base(nameof(Decoder))
    {
        var reversed = config.BlockOutChannels.Reverse().ToArray();
        int groups = config.NormNumGroups;
        double eps = Encoder.NormEps;
        _convIn = ModuleBuilder.Conv2d(config.LatentChannels, reversed[0], 3, stride: 1, padding: 1, device: device, dtype: dtype);
        _midBlock = new UNetMidBlock2D(reversed[0], config.MidBlockAddAttention, groups, eps, device, dtype);
        var blocks = new UpDecoderBlock2D[reversed.Length];
        int output = reversed[0];
        for (int i = 0; i < reversed.Length; i++)
        {
            int previous = output;
            output = reversed[i];
            blocks[i] = new UpDecoderBlock2D(previous, output, config.LayersPerBlock + 1, addUpsample: i != reversed.Length - 1, groups, eps, device, dtype);
        }
        _upBlocks = nn.ModuleList(blocks);
        _convNormOut = GroupNormalization.Create(groups, reversed[^1], eps, device, dtype);
        _convOut = ModuleBuilder.Conv2d(reversed[^1], config.OutChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        register_module("conv_in", _convIn);
        register_module("mid_block", _midBlock);
        register_module("up_blocks", _upBlocks);
        register_module("conv_norm_out", _convNormOut);
        register_module("conv_out", _convOut);
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input) => Forward(input, CancellationToken.None);

    /// <summary>Told the name of each block (<c>mid_block</c>, <c>up_blocks.0</c>, ...) as it finishes; for tests.</summary>
    internal Action<string>? BlockFinished { get; set; }

    /// <summary>
    /// <see cref="forward"/>, checking <paramref name="cancellationToken"/> before every block. Intermediates are released
    /// as they are consumed; on cancellation the one in flight belongs to the caller's dispose scope.
    /// </summary>
    internal Tensor Forward(Tensor input, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var x = _convIn.forward(input);
        cancellationToken.ThrowIfCancellationRequested();
        x = x.Then(_midBlock.forward, input);
        BlockFinished?.Invoke("mid_block");
        for (int i = 0; i < _upBlocks.Count; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            x = x.Then(_upBlocks[i].forward, input);
            BlockFinished?.Invoke($"up_blocks.{i}");
        }
        cancellationToken.ThrowIfCancellationRequested();
        return x.Then(_convNormOut.forward, input).Then(Eager.Silu, input).Then(_convOut.forward, input);
    }
}
