namespace LatentDiffusion.Formats;

/// <summary>
/// Upper bounds on the size-like numbers of model configs (and on the indices in single-file tensor names). A config or
/// file past a bound is refused with an <see cref="InvalidDataException"/> naming the file, key and value before anything
/// is allocated from it, so a hostile or corrupt model cannot make libtorch try an impossible allocation. Every bound is
/// far above any released Stable Diffusion model, SDXL included; within the bounds a model can still use the memory its
/// declared (and, for weights, stored) sizes imply.
/// </summary>
public static class ModelLimits
{
    /// <summary>
    /// Largest channel or hidden width: UNet/VAE <c>block_out_channels</c>, <c>in_channels</c>, <c>out_channels</c>,
    /// <c>latent_channels</c>, <c>cross_attention_dim</c>, <c>time_cond_proj_dim</c>, the text encoder's
    /// <c>hidden_size</c>. SD 1.x/2.x/SDXL use at most 1280 (UNet), 512 (VAE) and 2048 (SDXL's cross-attention);
    /// 8192 leaves more than six times that. A 3x3 convolution at this width already holds 600 million weights.
    /// </summary>
    public const int MaxChannels = 8192;

    /// <summary>
    /// Largest derived width: the text encoder's <c>intermediate_size</c> and the UNet's <c>time_embedding_dim</c>
    /// (four times a width in every released model: 3072/4096/5120), four times <see cref="MaxChannels"/>.
    /// </summary>
    public const int MaxFeedForward = 4 * MaxChannels;

    /// <summary>
    /// Most resolution levels (entries of <c>block_out_channels</c> and the block-type lists): SD uses 4; each level halves
    /// the resolution, so 16 levels already downsample by 32768.
    /// </summary>
    public const int MaxLevels = 16;

    /// <summary>
    /// Most layers of one kind: <c>layers_per_block</c>, <c>transformer_layers_per_block</c> (SDXL: 10) and the text
    /// encoder's <c>num_hidden_layers</c> (SD 2.x: 23 of OpenCLIP's 24; SDXL's OpenCLIP bigG: 32).
    /// </summary>
    public const int MaxLayers = 128;

    /// <summary>
    /// Most residual and transformer blocks in one UNet or VAE, counted over all levels (each per-level value may be within
    /// <see cref="MaxLayers"/> while their product is not): SD 1.x has 38 in its UNet, SDXL about 90, the SD VAE 24.
    /// Checking a config against its weights builds a shape-only copy of the network, whose cost grows with this count.
    /// </summary>
    public const int MaxBlocks = 1024;

    /// <summary>Largest text-encoder <c>vocab_size</c>: CLIP has 49,408 tokens, the largest language-model vocabularies about 256,000.</summary>
    public const int MaxVocabulary = 1_000_000;

    /// <summary>Largest text-encoder <c>max_position_embeddings</c>: CLIP has 77 positions.</summary>
    public const int MaxPositions = 8192;

    /// <summary>Largest scheduler <c>num_train_timesteps</c>: every released model was trained with 1000.</summary>
    public const int MaxTrainTimesteps = 100_000;

    /// <summary>Largest UNet <c>sample_size</c> (latent side): SD 1.x 64, SD 2.x 96, SDXL 128; 1024 latents are 8192 pixels.</summary>
    public const int MaxLatentSampleSize = 1024;

    /// <summary>Largest VAE <c>sample_size</c> (image side, also the default tile size): SD 512 or 768, SDXL 1024.</summary>
    public const int MaxImageSampleSize = 8192;

    /// <summary>Largest convolution kernel (<c>conv_in_kernel</c>, <c>conv_out_kernel</c>; 3 in every released model) and <c>downsample_padding</c> (1).</summary>
    public const int MaxKernel = 31;

    /// <summary>
    /// Smallest and largest VAE <c>scaling_factor</c>: released VAEs use 0.13025 to 1.5305. Latents are divided by it before
    /// decoding, so a factor below 1/1000 would push typical latents past the float16 range (65504).
    /// </summary>
    public const double MinScalingFactor = 1e-3;

    /// <inheritdoc cref="MinScalingFactor"/>
    public const double MaxScalingFactor = 1e3;

    /// <summary>
    /// Largest index in a single-file checkpoint's tensor names (<c>input_blocks.N</c>, <c>encoder.layers.N</c>,
    /// <c>resblocks.N</c>, ...): real files stop below 40. Larger numbers are refused before any config is inferred from them.
    /// </summary>
    public const int MaxKeyIndex = 9999;

    /// <summary>Throws when <paramref name="value"/> is outside [<paramref name="min"/>, <paramref name="max"/>].</summary>
    /// <exception cref="InvalidDataException">The message names the source, key, value and the accepted range.</exception>
    internal static int Check(string source, string key, int value, int min, int max)
        => value >= min && value <= max ? value
            : throw new InvalidDataException($"Config '{source}': '{key}' = {value} is out of range (accepted: {min} to {max:N0}).");

    /// <summary>Throws unless <paramref name="value"/> is finite and positive (an epsilon, a scale).</summary>
    /// <exception cref="InvalidDataException">The message names the source, key and value.</exception>
    internal static double PositiveFinite(string source, string key, double value)
        => double.IsFinite(value) && value > 0 ? value
            : throw new InvalidDataException($"Config '{source}': '{key}' = {value.ToString(System.Globalization.CultureInfo.InvariantCulture)} must be a positive finite number.");
}
