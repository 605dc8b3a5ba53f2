using LatentDiffusion.Layers;
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
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    /// <summary>The weights file of a diffusers folder.</summary>
    public const string DefaultWeightsFile = "diffusion_pytorch_model.safetensors";

    /// <summary>The half-precision variant's weights file, used when <see cref="DefaultWeightsFile"/> is absent.</summary>
    public const string Fp16WeightsFile = "diffusion_pytorch_model.fp16.safetensors";

    private readonly Encoder _encoder;
    private readonly Decoder _decoder;
    private readonly nn.Module<Tensor, Tensor>? _quantConv;
    private readonly nn.Module<Tensor, Tensor>? _postQuantConv;
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
        _encoder = new Encoder(config, device, dtype);
        _decoder = new Decoder(config, device, dtype);
        register_module("encoder", _encoder);
        register_module("decoder", _decoder);
        int latent = config.LatentChannels;
        if (config.UseQuantConv)
        {
            _quantConv = ModuleBuilder.Conv2d(2 * latent, 2 * latent, 1, device: device, dtype: dtype);
            register_module("quant_conv", _quantConv);
        }
        if (config.UsePostQuantConv)
        {
            _postQuantConv = ModuleBuilder.Conv2d(latent, latent, 1, device: device, dtype: dtype);
            register_module("post_quant_conv", _postQuantConv);
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
    public DiagonalGaussian Encode(Tensor images) => Encode(images, CancellationToken.None);

    /// <summary>
    /// As <see cref="Encode(Tensor)"/>, checking <paramref name="cancellationToken"/> before every encoder block, slice and tile.
    /// </summary>
    /// <exception cref="ArgumentException">The images are not <c>[batch, in_channels, H, W]</c>.</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled; the tensors the call allocated are released.</exception>
    public DiagonalGaussian Encode(Tensor images, CancellationToken cancellationToken)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var x = Prepare(images, Config.InChannels, "images", nameof(images));
        var moments = UseSlicing && x.shape[0] > 1
            ? cat(x.split(1, 0).Select(slice => EncodeMoments(slice, cancellationToken)).ToArray(), 0)
            : EncodeMoments(x, cancellationToken);
        return PosteriorOutOfScope(moments);
    }

    /// <summary>
    /// Decodes unscaled latents <c>[batch, latent_channels, h, w]</c> (divide by <see cref="ScalingFactor"/> first) to images
    /// <c>[batch, out_channels, h·f, w·f]</c> in roughly [-1, 1]: decoder(post_quant_conv(z)). Inputs on another device or
    /// dtype are converted to the model's. Honours <see cref="UseSlicing"/> and <see cref="UseTiling"/>.
    /// </summary>
    /// <exception cref="ArgumentException">The latents are not <c>[batch, latent_channels, h, w]</c>.</exception>
    public Tensor Decode(Tensor latents) => Decode(latents, CancellationToken.None);

    /// <summary>
    /// As <see cref="Decode(Tensor)"/>, checking <paramref name="cancellationToken"/> before every decoder block, slice and
    /// tile, so that a cancellation stops a large decode within one block.
    /// </summary>
    /// <exception cref="ArgumentException">The latents are not <c>[batch, latent_channels, h, w]</c>.</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled; the tensors the call allocated are released.</exception>
    public Tensor Decode(Tensor latents, CancellationToken cancellationToken)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var z = Prepare(latents, Config.LatentChannels, "latents", nameof(latents));
        var images = UseSlicing && z.shape[0] > 1
            ? cat(z.split(1, 0).Select(slice => DecodeOne(slice, cancellationToken)).ToArray(), 0)
            : DecodeOne(z, cancellationToken);
        return images.MoveToOuterDisposeScope();
    }

    /// <summary>The decoder, for tests that watch its blocks.</summary>
    internal Decoder DecoderModule => _decoder;

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
        return TiledDecode(z, tileLatent, tileSample, overlapFactor ?? TileOverlapFactor, CancellationToken.None).MoveToOuterDisposeScope();
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
        var posterior = new DiagonalGaussian(TiledEncode(x, tileSample, tileLatent, overlapFactor ?? TileOverlapFactor, CancellationToken.None));
        posterior.Mean.MoveToOuterDisposeScope();
        posterior.Std.MoveToOuterDisposeScope();
        return posterior;
    }

    /// <summary>
    /// <see cref="Encode(Tensor)"/> for training: keeps the autograd graph (no <c>no_grad</c>), no slicing or tiling. Inputs are
    /// converted to the model's device and dtype.
    /// </summary>
    internal DiagonalGaussian EncodeForTraining(Tensor images)
    {
        using var scope = NewDisposeScope();
        var x = Prepare(images, Config.InChannels, "images", nameof(images));
        var h = _encoder.forward(x);
        if (_quantConv is not null) h = _quantConv.forward(h);
        return PosteriorOutOfScope(h);
    }

    /// <summary><see cref="Decode(Tensor)"/> for training: keeps the autograd graph, no slicing or tiling.</summary>
    internal Tensor DecodeForTraining(Tensor latents)
    {
        using var scope = NewDisposeScope();
        var z = Prepare(latents, Config.LatentChannels, "latents", nameof(latents));
        var h = _postQuantConv is null ? z : _postQuantConv.forward(z);
        return _decoder.forward(h).MoveToOuterDisposeScope();
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

    private Tensor EncodeMoments(Tensor x, CancellationToken cancellationToken)
    {
        if (UseTiling && (x.shape[3] > TileSampleMinSize || x.shape[2] > TileSampleMinSize))
            return TiledEncode(x, TileSampleMinSize, TileLatentMinSize, TileOverlapFactor, cancellationToken);
        using var scope = NewDisposeScope();
        var h = _encoder.Forward(x, cancellationToken);
        if (_quantConv is not null) h = _quantConv.forward(h);
        return h.MoveToOuterDisposeScope();
    }

    private Tensor DecodeOne(Tensor z, CancellationToken cancellationToken)
    {
        if (UseTiling && (z.shape[3] > TileLatentMinSize || z.shape[2] > TileLatentMinSize))
            return TiledDecode(z, TileLatentMinSize, TileSampleMinSize, TileOverlapFactor, cancellationToken);
        using var scope = NewDisposeScope();
        var h = _postQuantConv is null ? z : _postQuantConv.forward(z);
        return _decoder.Forward(h, cancellationToken).MoveToOuterDisposeScope();
    }

    private Tensor TiledEncode(Tensor x, int tileSample, int tileLatent, double overlapFactor, CancellationToken cancellationToken)
        => VaeTiling.Apply(x, tileSample, tileLatent, overlapFactor, tile =>
        {
            using var scope = NewDisposeScope();
            var h = _encoder.Forward(tile, cancellationToken);
            if (_quantConv is not null) h = _quantConv.forward(h);
            return h.MoveToOuterDisposeScope();
        });

    private Tensor TiledDecode(Tensor z, int tileLatent, int tileSample, double overlapFactor, CancellationToken cancellationToken)
        => VaeTiling.Apply(z, tileLatent, tileSample, overlapFactor, tile =>
        {
            using var scope = NewDisposeScope();
            var h = _postQuantConv is null ? tile : _postQuantConv.forward(tile);
            return _decoder.Forward(h, cancellationToken).MoveToOuterDisposeScope();
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
