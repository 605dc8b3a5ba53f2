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
    private readonly Conv2d conv_in;
    private readonly UNetMidBlock2D mid_block;
    private readonly ModuleList<UpDecoderBlock2D> up_blocks;
    private readonly GroupNorm conv_norm_out;
    private readonly Conv2d conv_out;

    /// <summary>Builds the decoder described by <paramref name="config"/> on <paramref name="device"/> in <paramref name="dtype"/>.</summary>
    public Decoder(AutoencoderKLConfig config, Device device, ScalarType dtype) : base(nameof(Decoder))
    {
        var reversed = config.BlockOutChannels.Reverse().ToArray();
        int groups = config.NormNumGroups;
        double eps = Encoder.NormEps;
        conv_in = nn.Conv2d(config.LatentChannels, reversed[0], 3, stride: 1, padding: 1, device: device, dtype: dtype);
        mid_block = new UNetMidBlock2D(reversed[0], config.MidBlockAddAttention, groups, eps, device, dtype);
        var blocks = new UpDecoderBlock2D[reversed.Length];
        int output = reversed[0];
        for (int i = 0; i < reversed.Length; i++)
        {
            int previous = output;
            output = reversed[i];
            blocks[i] = new UpDecoderBlock2D(previous, output, config.LayersPerBlock + 1, addUpsample: i != reversed.Length - 1, groups, eps, device, dtype);
        }
        up_blocks = nn.ModuleList(blocks);
        conv_norm_out = GroupNormalization.Create(groups, reversed[^1], eps, device, dtype);
        conv_out = nn.Conv2d(reversed[^1], config.OutChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        register_module("conv_in", conv_in);
        register_module("mid_block", mid_block);
        register_module("up_blocks", up_blocks);
        register_module("conv_norm_out", conv_norm_out);
        register_module("conv_out", conv_out);
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
        var x = conv_in.forward(input);
        cancellationToken.ThrowIfCancellationRequested();
        x = x.Then(mid_block.forward, input);
        BlockFinished?.Invoke("mid_block");
        for (int i = 0; i < up_blocks.Count; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            x = x.Then(up_blocks[i].forward, input);
            BlockFinished?.Invoke($"up_blocks.{i}");
        }
        cancellationToken.ThrowIfCancellationRequested();
        return x.Then(conv_norm_out.forward, input).Then(Eager.Silu, input).Then(conv_out.forward, input);
    }
}
