using System.Text.Json;
using LatentDiffusion.Formats;

namespace LatentDiffusion.Vae;

/// <summary>
/// The architecture of an <see cref="AutoencoderKL"/>, as the reference's <c>vae/config.json</c> describes it. Defaults are
/// the reference's constructor defaults, so a config that omits a key means what it means to the reference.
/// </summary>
public sealed class AutoencoderKLConfig
{
    /// <summary>The only down block the KL autoencoder's encoder is built from.</summary>
    public const string DownEncoderBlock2D = "DownEncoderBlock2D";

    /// <summary>The only up block the KL autoencoder's decoder is built from.</summary>
    public const string UpDecoderBlock2D = "UpDecoderBlock2D";

    /// <summary>Image channels taken in (<c>in_channels</c>).</summary>
    public int InChannels { get; init; } = 3;

    /// <summary>Image channels produced (<c>out_channels</c>).</summary>
    public int OutChannels { get; init; } = 3;

    /// <summary>Encoder block types (<c>down_block_types</c>); only <see cref="DownEncoderBlock2D"/>.</summary>
    public IReadOnlyList<string> DownBlockTypes { get; init; } = [DownEncoderBlock2D];

    /// <summary>Decoder block types (<c>up_block_types</c>); only <see cref="UpDecoderBlock2D"/>.</summary>
    public IReadOnlyList<string> UpBlockTypes { get; init; } = [UpDecoderBlock2D];

    /// <summary>Channels per resolution level (<c>block_out_channels</c>).</summary>
    public IReadOnlyList<int> BlockOutChannels { get; init; } = [64];

    /// <summary>Resnets per encoder block; decoder blocks have one more (<c>layers_per_block</c>).</summary>
    public int LayersPerBlock { get; init; } = 1;

    /// <summary>Activation (<c>act_fn</c>); only <c>silu</c>.</summary>
    public string ActFn { get; init; } = "silu";

    /// <summary>Latent channels (<c>latent_channels</c>).</summary>
    public int LatentChannels { get; init; } = 4;

    /// <summary>Groups of every group norm (<c>norm_num_groups</c>).</summary>
    public int NormNumGroups { get; init; } = 32;

    /// <summary>Image side the model was trained at (<c>sample_size</c>); also the default tile size of tiled encoding/decoding.</summary>
    public int SampleSize { get; init; } = 32;

    /// <summary>Latent scale (<c>scaling_factor</c>).</summary>
    public double ScalingFactor { get; init; } = 0.18215;

    /// <summary>Whether the reference runs this VAE in float32 even in a half-precision pipeline (<c>force_upcast</c>).</summary>
    public bool ForceUpcast { get; init; } = true;

    /// <summary>Whether the 1x1 <c>quant_conv</c> follows the encoder (<c>use_quant_conv</c>).</summary>
    public bool UseQuantConv { get; init; } = true;

    /// <summary>Whether the 1x1 <c>post_quant_conv</c> precedes the decoder (<c>use_post_quant_conv</c>).</summary>
    public bool UsePostQuantConv { get; init; } = true;

    /// <summary>Whether the encoder's and decoder's mid blocks hold a self-attention (<c>mid_block_add_attention</c>).</summary>
    public bool MidBlockAddAttention { get; init; } = true;

    /// <summary>Pixels per latent along each side: 2^(levels − 1).</summary>
    public int ScaleFactor => 1 << (BlockOutChannels.Count - 1);

    /// <summary>The config as diffusers writes <c>vae/config.json</c> (<c>_class_name</c> <c>AutoencoderKL</c>), loadable by diffusers and by <see cref="FromJson"/>.</summary>
    public System.Text.Json.Nodes.JsonObject ToJson()
    {
        static System.Text.Json.Nodes.JsonArray List<T>(IEnumerable<T> values) => new([.. values.Select(v => System.Text.Json.Nodes.JsonValue.Create(v))]);
        return new System.Text.Json.Nodes.JsonObject
        {
            ["_class_name"] = "AutoencoderKL",
            ["_diffusers_version"] = LatentDiffusion.Formats.ConfigJson.DiffusersVersion,
            ["act_fn"] = ActFn,
            ["block_out_channels"] = List(BlockOutChannels),
            ["down_block_types"] = List(DownBlockTypes),
            ["force_upcast"] = ForceUpcast,
            ["in_channels"] = InChannels,
            ["latent_channels"] = LatentChannels,
            ["latents_mean"] = null,
            ["latents_std"] = null,
            ["layers_per_block"] = LayersPerBlock,
            ["mid_block_add_attention"] = MidBlockAddAttention,
            ["norm_num_groups"] = NormNumGroups,
            ["out_channels"] = OutChannels,
            ["sample_size"] = SampleSize,
            ["scaling_factor"] = ScalingFactor,
            ["shift_factor"] = null,
            ["up_block_types"] = List(UpBlockTypes),
            ["use_post_quant_conv"] = UsePostQuantConv,
            ["use_quant_conv"] = UseQuantConv,
        };
    }

    /// <summary>Reads <c>config.json</c>.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="NotSupportedException">A value the library does not implement (the message names file, key and value).</exception>
    /// <exception cref="InvalidDataException">A malformed or inconsistent value.</exception>
    public static AutoencoderKLConfig Load(string path) => FromJson(JsonConfig.Load(path));

    /// <summary>Reads an already-parsed config, refusing the settings of AutoencoderKL variants this library does not implement.</summary>
    /// <exception cref="NotSupportedException">A value the library does not implement (the message names source, key and value).</exception>
    /// <exception cref="InvalidDataException">A malformed or inconsistent value.</exception>
    public static AutoencoderKLConfig FromJson(JsonConfig json)
    {
        json.RequireOneOf("_class_name", "AutoencoderKL");
        json.RequireOneOf("act_fn", "silu");
        // Latent normalisation by mean/std or a shift belongs to other model families (SDXL refiners, SD3, Flux); refusing them
        // keeps a pipeline from silently mis-scaling latents.
        json.RequireOneOf("latents_mean", "null");
        json.RequireOneOf("latents_std", "null");
        json.RequireOneOf("shift_factor", "null");

        var down = json.StringArray("down_block_types") ?? [DownEncoderBlock2D];
        var up = json.StringArray("up_block_types") ?? [UpDecoderBlock2D];
        RequireAll(json, "down_block_types", down, DownEncoderBlock2D);
        RequireAll(json, "up_block_types", up, UpDecoderBlock2D);

        var config = new AutoencoderKLConfig
        {
            InChannels = json.Int("in_channels", 3),
            OutChannels = json.Int("out_channels", 3),
            DownBlockTypes = down,
            UpBlockTypes = up,
            BlockOutChannels = json.IntArray("block_out_channels") ?? [64],
            LayersPerBlock = json.Int("layers_per_block", 1),
            ActFn = json.String("act_fn", "silu")!,
            LatentChannels = json.Int("latent_channels", 4),
            NormNumGroups = json.Int("norm_num_groups", 32),
            SampleSize = ReadSampleSize(json),
            ScalingFactor = json.Double("scaling_factor", 0.18215),
            ForceUpcast = json.Bool("force_upcast", true),
            UseQuantConv = json.Bool("use_quant_conv", true),
            UsePostQuantConv = json.Bool("use_post_quant_conv", true),
            MidBlockAddAttention = json.Bool("mid_block_add_attention", true),
        };
        config.Validate(json.Source);
        return config;
    }

    /// <summary>Checks that the numbers describe a buildable model.</summary>
    /// <param name="source">Where the config came from, for messages.</param>
    /// <exception cref="NotSupportedException">A block type or activation the library does not implement.</exception>
    /// <remarks>Sizes must lie within <see cref="ModelLimits"/>, <c>scaling_factor</c> within [<see cref="ModelLimits.MinScalingFactor"/>, <see cref="ModelLimits.MaxScalingFactor"/>].</remarks>
    /// <exception cref="InvalidDataException">Inconsistent sizes, or a value out of its range.</exception>
    public void Validate(string source)
    {
        if (ActFn != "silu") throw new NotSupportedException($"Config '{source}': 'act_fn' = \"{ActFn}\" is not supported (supported: silu).");
        if (DownBlockTypes.FirstOrDefault(t => t != DownEncoderBlock2D) is string d)
            throw new NotSupportedException($"Config '{source}': 'down_block_types' contains \"{d}\", which is not supported (supported: {DownEncoderBlock2D}).");
        if (UpBlockTypes.FirstOrDefault(t => t != UpDecoderBlock2D) is string u)
            throw new NotSupportedException($"Config '{source}': 'up_block_types' contains \"{u}\", which is not supported (supported: {UpDecoderBlock2D}).");
        if (BlockOutChannels.Count == 0) throw new InvalidDataException($"Config '{source}': 'block_out_channels' is empty.");
        // The reference indexes block_out_channels by the block lists' positions, so the three must agree.
        if (DownBlockTypes.Count != BlockOutChannels.Count || UpBlockTypes.Count != BlockOutChannels.Count)
            throw new InvalidDataException($"Config '{source}': 'down_block_types' ({DownBlockTypes.Count}), 'up_block_types' ({UpBlockTypes.Count}) and 'block_out_channels' ({BlockOutChannels.Count}) must have the same length.");
        Positive(source, "in_channels", InChannels);
        Positive(source, "out_channels", OutChannels);
        Positive(source, "latent_channels", LatentChannels);
        Positive(source, "layers_per_block", LayersPerBlock);
        Positive(source, "norm_num_groups", NormNumGroups);
        Positive(source, "sample_size", SampleSize);
        ModelLimits.Check(source, "block_out_channels (number of levels)", BlockOutChannels.Count, 1, ModelLimits.MaxLevels);
        ModelLimits.Check(source, "in_channels", InChannels, 1, ModelLimits.MaxChannels);
        ModelLimits.Check(source, "out_channels", OutChannels, 1, ModelLimits.MaxChannels);
        ModelLimits.Check(source, "latent_channels", LatentChannels, 1, ModelLimits.MaxChannels);
        ModelLimits.Check(source, "layers_per_block", LayersPerBlock, 1, ModelLimits.MaxLayers);
        ModelLimits.Check(source, "norm_num_groups", NormNumGroups, 1, ModelLimits.MaxChannels);
        ModelLimits.Check(source, "sample_size", SampleSize, 1, ModelLimits.MaxImageSampleSize);
        // Encoder: layers per level; decoder: one more per level; two mid blocks of two resnets.
        long blocks = (long)BlockOutChannels.Count * (2L * LayersPerBlock + 1) + 4;
        if (blocks > ModelLimits.MaxBlocks)
            throw new InvalidDataException($"Config '{source}': 'layers_per_block' = {LayersPerBlock} at {BlockOutChannels.Count} levels describes {blocks:N0} residual blocks, more than the {ModelLimits.MaxBlocks:N0} accepted.");
        foreach (int c in BlockOutChannels)
        {
            Positive(source, "block_out_channels", c);
            ModelLimits.Check(source, "block_out_channels", c, 1, ModelLimits.MaxChannels);
            if (c % NormNumGroups != 0)
                throw new InvalidDataException($"Config '{source}': 'block_out_channels' value {c} is not divisible by 'norm_num_groups' = {NormNumGroups}.");
        }
        if (!(ScalingFactor >= ModelLimits.MinScalingFactor && ScalingFactor <= ModelLimits.MaxScalingFactor))
            throw new InvalidDataException($"Config '{source}': 'scaling_factor' = {ScalingFactor.ToString(System.Globalization.CultureInfo.InvariantCulture)} is out of range (accepted: {ModelLimits.MinScalingFactor} to {ModelLimits.MaxScalingFactor}; Stable Diffusion VAEs use 0.13 to 1.5).");
    }

    private static void Positive(string source, string key, int value)
    {
        if (value <= 0) throw new InvalidDataException($"Config '{source}': '{key}' = {value} must be positive.");
    }

    private static void RequireAll(JsonConfig json, string key, string[] values, string supported)
    {
        if (values.FirstOrDefault(v => v != supported) is string bad)
            throw new NotSupportedException($"Config '{json.Source}': '{key}' contains \"{bad}\", which is not supported (supported: {supported}).");
    }

    // Some configs give sample_size as [h, w]; the reference tiles with the first entry.
    private static int ReadSampleSize(JsonConfig json)
    {
        if (json.Root.TryGetProperty("sample_size", out var v) && v.ValueKind == JsonValueKind.Array)
        {
            var sizes = json.IntArray("sample_size")!;
            if (sizes.Length == 0) throw new InvalidDataException($"Config '{json.Source}': 'sample_size' is an empty array.");
            return sizes[0];
        }
        return json.Int("sample_size", 32);
    }
}
