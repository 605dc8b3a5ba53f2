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
    // The reference hard-codes this epsilon for every norm of the autoencoder.
    internal const double NormEps = 1e-6;

    private readonly Conv2d conv_in;
    private readonly ModuleList<DownEncoderBlock2D> down_blocks;
    private readonly UNetMidBlock2D mid_block;
    private readonly GroupNorm conv_norm_out;
    private readonly Conv2d conv_out;

    /// <summary>Builds the encoder described by <paramref name="config"/> on <paramref name="device"/> in <paramref name="dtype"/>.</summary>
    public Encoder(AutoencoderKLConfig config, Device device, ScalarType dtype) : base(nameof(Encoder))
    {
        var channels = config.BlockOutChannels;
        int groups = config.NormNumGroups;
        conv_in = nn.Conv2d(config.InChannels, channels[0], 3, stride: 1, padding: 1, device: device, dtype: dtype);
        var blocks = new DownEncoderBlock2D[channels.Count];
        int output = channels[0];
        for (int i = 0; i < channels.Count; i++)
        {
            int input = output;
            output = channels[i];
            blocks[i] = new DownEncoderBlock2D(input, output, config.LayersPerBlock, addDownsample: i != channels.Count - 1, groups, NormEps, device, dtype);
        }
        down_blocks = nn.ModuleList(blocks);
        mid_block = new UNetMidBlock2D(channels[^1], config.MidBlockAddAttention, groups, NormEps, device, dtype);
        conv_norm_out = GroupNormalization.Create(groups, channels[^1], NormEps, device, dtype);
        // Twice the latent channels: mean and log-variance of the diagonal Gaussian posterior.
        conv_out = nn.Conv2d(channels[^1], 2 * config.LatentChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        register_module("conv_in", conv_in);
        register_module("down_blocks", down_blocks);
        register_module("mid_block", mid_block);
        register_module("conv_norm_out", conv_norm_out);
        register_module("conv_out", conv_out);
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
        var x = conv_in.forward(input);
        foreach (var block in down_blocks)
        {
            cancellationToken.ThrowIfCancellationRequested();
            x = x.Then(block.forward, input);
        }
        cancellationToken.ThrowIfCancellationRequested();
        x = x.Then(mid_block.forward, input);
        cancellationToken.ThrowIfCancellationRequested();
        return x.Then(conv_norm_out.forward, input).Then(Eager.Silu, input).Then(conv_out.forward, input);
    }
}
