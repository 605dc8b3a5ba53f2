using LatentDiffusion.Abstractions;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Vae;

/// <summary>
/// The KL-regularised autoencoder of Stable Diffusion (the reference's <c>AutoencoderKL</c>): images ↔ latents 8x smaller per
/// side. Parameter names are exactly the reference's state-dict names. Optional memory savers, off by default as in the
/// reference: <see cref="UseSlicing"/> (one image of a batch at a time, same result) and <see cref="UseTiling"/> (overlapping
/// tiles blended linearly, a slightly different result, for images larger than <see cref="TileSampleMinSize"/>).
/// </summary>
public sealed partial class AutoencoderKL : nn.Module<Tensor, Tensor>, IVae
{
    /// <summary>The weights file of a diffusers folder.</summary>
    public const string DefaultWeightsFile = "diffusion_pytorch_model.safetensors";

    /// <summary>The half-precision variant's weights file, used when <see cref="DefaultWeightsFile"/> is absent.</summary>
    public const string Fp16WeightsFile = "diffusion_pytorch_model.fp16.safetensors";

    private readonly Encoder encoder;
    private readonly Decoder decoder;
    private readonly Conv2d? quant_conv;
    private readonly Conv2d? post_quant_conv;
    private int _tileSampleMinSize;
    private int _tileLatentMinSize;
    private double _tileOverlapFactor = 0.25;

    /// <summary>Builds the model with uninitialised weights on <paramref name="device"/> in <paramref name="dtype"/>; use <see cref="Load(string, Device, ScalarType, string?)"/> to get a usable one.</summary>
    /// <exception cref="InvalidDataException">The config is inconsistent.</exception>
    /// <exception cref="NotSupportedException">The config asks for something not implemented.</exception>
    public AutoencoderKL(AutoencoderKLConfig config, Device device, ScalarType dtype) : base(nameof(AutoencoderKL))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate("AutoencoderKL config");
        Config = config;
        Device = device;
        DType = dtype;
        encoder = new Encoder(config, device, dtype);
        decoder = new Decoder(config, device, dtype);
        register_module("encoder", encoder);
        register_module("decoder", decoder);
        int latent = config.LatentChannels;
        if (config.UseQuantConv)
        {
            quant_conv = nn.Conv2d(2 * latent, 2 * latent, 1, device: device, dtype: dtype);
            register_module("quant_conv", quant_conv);
        }
        if (config.UsePostQuantConv)
        {
            post_quant_conv = nn.Conv2d(latent, latent, 1, device: device, dtype: dtype);
            register_module("post_quant_conv", post_quant_conv);
        }
        _tileSampleMinSize = config.SampleSize;
        _tileLatentMinSize = Math.Max(1, config.SampleSize / config.ScaleFactor);
        eval();
    }

    /// <summary>The architecture.</summary>
    public AutoencoderKLConfig Config { get; }

    /// <inheritdoc/>
    public double ScalingFactor => Config.ScalingFactor;

    /// <inheritdoc/>
    public int ScaleFactor => Config.ScaleFactor;

    /// <inheritdoc/>
    public int LatentChannels => Config.LatentChannels;

    /// <summary>
    /// <c>force_upcast</c>: the reference runs this VAE in float32 when the pipeline is in float16, because its activations
    /// overflow half precision. Pipelines should honour it; the model itself runs in whatever dtype it was built in.
    /// </summary>
    public bool ForceUpcast => Config.ForceUpcast;

    /// <inheritdoc/>
    public Device Device { get; }

    /// <inheritdoc/>
    public ScalarType DType { get; }

    /// <summary>
    /// Encode and decode a batch one image at a time (the reference's <c>enable_slicing</c>): lower peak memory, same result.
    /// </summary>
    public bool UseSlicing { get; set; }

    /// <summary>
    /// Encode images larger than <see cref="TileSampleMinSize"/> (decode latents larger than <see cref="TileLatentMinSize"/>)
    /// in overlapping tiles (the reference's <c>enable_tiling</c>). Memory stays bounded by the tile size; the result differs
    /// slightly from untiled processing because each tile is normalised on its own.
    /// </summary>
    public bool UseTiling { get; set; }

    /// <summary>Tile side in pixels for tiled encoding (default <c>sample_size</c>).</summary>
    public int TileSampleMinSize
    {
        get => _tileSampleMinSize;
        set => _tileSampleMinSize = value > 0 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "The tile size must be positive.");
    }

    /// <summary>Tile side in latents for tiled decoding (default <c>sample_size</c> / <see cref="ScaleFactor"/>).</summary>
    public int TileLatentMinSize
    {
        get => _tileLatentMinSize;
        set => _tileLatentMinSize = value > 0 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "The tile size must be positive.");
    }

    /// <summary>Fraction of a tile that overlaps its neighbour and is blended (default 0.25).</summary>
    public double TileOverlapFactor
    {
        get => _tileOverlapFactor;
        set => _tileOverlapFactor = value is >= 0 and < 1 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "The overlap factor must be in [0, 1).");
    }

    /// <summary>
    /// Encodes images <c>[batch, in_channels, H, W]</c> in [-1, 1] to the posterior: moments = quant_conv(encoder(x)). Inputs on
    /// another device or dtype are converted to the model's. Honours <see cref="UseSlicing"/> and <see cref="UseTiling"/>.
    /// </summary>
    /// <exception cref="ArgumentException">The images are not <c>[batch, in_channels, H, W]</c>.</exception>
    public DiagonalGaussian Encode(Tensor images)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var x = Prepare(images, Config.InChannels, "images", nameof(images));
        var moments = UseSlicing && x.shape[0] > 1
            ? cat(x.split(1, 0).Select(EncodeMoments).ToArray(), 0)
            : EncodeMoments(x);
        return PosteriorOutOfScope(moments);
    }

    /// <summary>
    /// Decodes unscaled latents <c>[batch, latent_channels, h, w]</c> (divide by <see cref="ScalingFactor"/> first) to images
    /// <c>[batch, out_channels, h·f, w·f]</c> in roughly [-1, 1]: decoder(post_quant_conv(z)). Inputs on another device or
    /// dtype are converted to the model's. Honours <see cref="UseSlicing"/> and <see cref="UseTiling"/>.
    /// </summary>
    /// <exception cref="ArgumentException">The latents are not <c>[batch, latent_channels, h, w]</c>.</exception>
    public Tensor Decode(Tensor latents)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var z = Prepare(latents, Config.LatentChannels, "latents", nameof(latents));
        var images = UseSlicing && z.shape[0] > 1
            ? cat(z.split(1, 0).Select(DecodeOne).ToArray(), 0)
            : DecodeOne(z);
        return images.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Decodes in overlapping tiles whatever the size, as the reference's <c>tiled_decode</c>: latent tiles of
    /// <paramref name="tileLatentSize"/> (default <see cref="TileLatentMinSize"/>) start every (1 − overlap)·tile latents; each
    /// decoded tile is blended linearly into its upper and left neighbours over overlap·tile pixels and cropped.
    /// </summary>
    /// <param name="latents">Unscaled latents <c>[batch, latent_channels, h, w]</c>.</param>
    /// <param name="tileLatentSize">Tile side in latents; the pixel tile is this times <see cref="ScaleFactor"/>.</param>
    /// <param name="overlapFactor">Overlap fraction in [0, 1) (default <see cref="TileOverlapFactor"/>).</param>
    /// <exception cref="ArgumentException">Bad shape, or a tile/overlap combination whose stride would be zero.</exception>
    public Tensor DecodeTiled(Tensor latents, int? tileLatentSize = null, double? overlapFactor = null)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var z = Prepare(latents, Config.LatentChannels, "latents", nameof(latents));
        int tileLatent = tileLatentSize ?? TileLatentMinSize;
        int tileSample = tileLatentSize is int t ? t * ScaleFactor : TileSampleMinSize;
        return TiledDecode(z, tileLatent, tileSample, overlapFactor ?? TileOverlapFactor).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Encodes in overlapping tiles whatever the size, as the reference's tiled encoding: image tiles of
    /// <paramref name="tileSampleSize"/> pixels (default <see cref="TileSampleMinSize"/>), blended in latent space.
    /// </summary>
    /// <param name="images">Images <c>[batch, in_channels, H, W]</c> in [-1, 1].</param>
    /// <param name="tileSampleSize">Tile side in pixels; the latent tile is this divided by <see cref="ScaleFactor"/>.</param>
    /// <param name="overlapFactor">Overlap fraction in [0, 1) (default <see cref="TileOverlapFactor"/>).</param>
    /// <exception cref="ArgumentException">Bad shape, or a tile/overlap combination whose stride would be zero.</exception>
    public DiagonalGaussian EncodeTiled(Tensor images, int? tileSampleSize = null, double? overlapFactor = null)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var x = Prepare(images, Config.InChannels, "images", nameof(images));
        int tileSample = tileSampleSize ?? TileSampleMinSize;
        int tileLatent = tileSampleSize is int t ? t / ScaleFactor : TileLatentMinSize;
        var posterior = new DiagonalGaussian(TiledEncode(x, tileSample, tileLatent, overlapFactor ?? TileOverlapFactor));
        posterior.Mean.MoveToOuterDisposeScope();
        posterior.Std.MoveToOuterDisposeScope();
        return posterior;
    }

    /// <summary>
    /// <see cref="Encode"/> for training: keeps the autograd graph (no <c>no_grad</c>), no slicing or tiling. Inputs are
    /// converted to the model's device and dtype.
    /// </summary>
    internal DiagonalGaussian EncodeForTraining(Tensor images)
    {
        using var scope = NewDisposeScope();
        var x = Prepare(images, Config.InChannels, "images", nameof(images));
        var h = encoder.forward(x);
        if (quant_conv is not null) h = quant_conv.forward(h);
        return PosteriorOutOfScope(h);
    }

    /// <summary><see cref="Decode"/> for training: keeps the autograd graph, no slicing or tiling.</summary>
    internal Tensor DecodeForTraining(Tensor latents)
    {
        using var scope = NewDisposeScope();
        var z = Prepare(latents, Config.LatentChannels, "latents", nameof(latents));
        var h = post_quant_conv is null ? z : post_quant_conv.forward(z);
        return decoder.forward(h).MoveToOuterDisposeScope();
    }

    /// <summary>The reference's <c>forward</c>: decode the posterior mean of the encoded images.</summary>
    public override Tensor forward(Tensor images)
    {
        using var posterior = Encode(images);
        return Decode(posterior.Mean);
    }

    // The posterior of the moments, its mean and std moved out of the caller's dispose scope (the caller owns them).
    private static DiagonalGaussian PosteriorOutOfScope(Tensor moments)
    {
        var posterior = new DiagonalGaussian(moments);
        posterior.Mean.MoveToOuterDisposeScope();
        posterior.Std.MoveToOuterDisposeScope();
        return posterior;
    }

    private Tensor EncodeMoments(Tensor x)
    {
        if (UseTiling && (x.shape[3] > TileSampleMinSize || x.shape[2] > TileSampleMinSize))
            return TiledEncode(x, TileSampleMinSize, TileLatentMinSize, TileOverlapFactor);
        using var scope = NewDisposeScope();
        var h = encoder.forward(x);
        if (quant_conv is not null) h = quant_conv.forward(h);
        return h.MoveToOuterDisposeScope();
    }

    private Tensor DecodeOne(Tensor z)
    {
        if (UseTiling && (z.shape[3] > TileLatentMinSize || z.shape[2] > TileLatentMinSize))
            return TiledDecode(z, TileLatentMinSize, TileSampleMinSize, TileOverlapFactor);
        using var scope = NewDisposeScope();
        var h = post_quant_conv is null ? z : post_quant_conv.forward(z);
        return decoder.forward(h).MoveToOuterDisposeScope();
    }

    private Tensor TiledEncode(Tensor x, int tileSample, int tileLatent, double overlapFactor)
        => VaeTiling.Apply(x, tileSample, tileLatent, overlapFactor, tile =>
        {
            using var scope = NewDisposeScope();
            var h = encoder.forward(tile);
            if (quant_conv is not null) h = quant_conv.forward(h);
            return h.MoveToOuterDisposeScope();
        });

    private Tensor TiledDecode(Tensor z, int tileLatent, int tileSample, double overlapFactor)
        => VaeTiling.Apply(z, tileLatent, tileSample, overlapFactor, tile =>
        {
            using var scope = NewDisposeScope();
            var h = post_quant_conv is null ? tile : post_quant_conv.forward(tile);
            return decoder.forward(h).MoveToOuterDisposeScope();
        });

    private Tensor Prepare(Tensor x, int channels, string what, string parameter)
    {
        ArgumentNullException.ThrowIfNull(x, parameter);
        if (x.dim() != 4 || x.shape[1] != channels || x.shape[0] == 0 || x.shape[2] == 0 || x.shape[3] == 0)
            throw new ArgumentException($"The {what} must be [batch, {channels}, height, width] with no empty dimension; got [{string.Join(", ", x.shape)}].", parameter);
        if (!x.is_floating_point())
            throw new ArgumentException($"The {what} must be floating point; got {x.dtype}.", parameter);
        return x.dtype == DType && x.device.type == Device.type && x.device.index == Device.index ? x.alias() : x.to(DType, Device);
    }
}
