using LatentDiffusion.Layers;
using LatentDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Vae;

/// <summary>
/// The autoencoder's encoder: image <c>[b, in_channels, H, W]</c> → posterior moments <c>[b, 2·latent_channels, H/f, W/f]</c>
/// (mean and log-variance, before <c>quant_conv</c>).
/// </summary>
public sealed class Encoder : nn.Module<Tensor, Tensor>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    // The reference hard-codes this epsilon for every norm of the autoencoder.
    internal const double NormEps = 1e-6;

    private readonly nn.Module<Tensor, Tensor> _convIn;
    private readonly ModuleList<DownEncoderBlock2D> _downBlocks;
    private readonly UNetMidBlock2D _midBlock;
    private readonly GroupNorm _convNormOut;
    private readonly nn.Module<Tensor, Tensor> _convOut;

    /// <summary>Builds the encoder described by <paramref name="config"/> on <paramref name="device"/> in <paramref name="dtype"/>.</summary>
    public Encoder(AutoencoderKLConfig config, Device device, ScalarType dtype) : base(nameof(Encoder))
    {
        var channels = config.BlockOutChannels;
        int groups = config.NormNumGroups;
        _convIn = ModuleBuilder.Conv2d(config.InChannels, channels[0], 3, stride: 1, padding: 1, device: device, dtype: dtype);
        var blocks = new DownEncoderBlock2D[channels.Count];
        int output = channels[0];
        for (int i = 0; i < channels.Count; i++)
        {
            int input = output;
            output = channels[i];
            blocks[i] = new DownEncoderBlock2D(input, output, config.LayersPerBlock, addDownsample: i != channels.Count - 1, groups, NormEps, device, dtype);
        }
        _downBlocks = nn.ModuleList(blocks);
        _midBlock = new UNetMidBlock2D(channels[^1], config.MidBlockAddAttention, groups, NormEps, device, dtype);
        _convNormOut = GroupNormalization.Create(groups, channels[^1], NormEps, device, dtype);
        // Twice the latent channels: mean and log-variance of the diagonal Gaussian posterior.
        _convOut = ModuleBuilder.Conv2d(channels[^1], 2 * config.LatentChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        register_module("conv_in", _convIn);
        register_module("down_blocks", _downBlocks);
        register_module("mid_block", _midBlock);
        register_module("conv_norm_out", _convNormOut);
        register_module("conv_out", _convOut);
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input) => Forward(input, CancellationToken.None);

    /// <summary>
    /// <see cref="forward"/>, checking <paramref name="cancellationToken"/> before every block. Intermediates are released
    /// as they are consumed; on cancellation the one in flight belongs to the caller's dispose scope.
    /// </summary>
    internal Tensor Forward(Tensor input, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var x = _convIn.forward(input);
        foreach (var block in _downBlocks)
        {
            cancellationToken.ThrowIfCancellationRequested();
            x = x.Then(block.forward, input);
        }
        cancellationToken.ThrowIfCancellationRequested();
        x = x.Then(_midBlock.forward, input);
        cancellationToken.ThrowIfCancellationRequested();
        return x.Then(_convNormOut.forward, input).Then(Eager.Silu, input).Then(_convOut.forward, input);
    }
}
