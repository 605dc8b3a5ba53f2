using System.Text.RegularExpressions;
using LatentDiffusion.Formats;

namespace LatentDiffusion.Loading.SingleFile;

/// <summary>How a single-file checkpoint stores its text encoder.</summary>
public enum TextEncoderLayout
{
    /// <summary>SD 1.x: OpenAI CLIP ViT-L/14 in the transformers layout, <c>cond_stage_model.transformer.text_model.*</c>.</summary>
    Clip,

    /// <summary>SD 2.x: OpenCLIP ViT-H/14 in its own layout, <c>cond_stage_model.model.*</c>, with fused q/k/v projections.</summary>
    OpenClip,
}

/// <summary>
/// Names the text-encoder tensors of an original checkpoint the way the reference <c>CLIPTextModel</c>'s inner text
/// model names its parameters, without the <c>text_model.</c> prefix (<c>embeddings.token_embedding.weight</c>,
/// <c>encoder.layers.0.self_attn.q_proj.weight</c>, <c>final_layer_norm.weight</c>).
/// </summary>
public static partial class ClipKeyMap
{
    /// <summary>The key prefix of an SD 1.x (transformers-layout CLIP) text encoder.</summary>
    public const string ClipPrefix = "cond_stage_model.transformer.";

    /// <summary>The key prefix of an SD 2.x (OpenCLIP) text encoder.</summary>
    public const string OpenClipPrefix = "cond_stage_model.model.";

    /// <summary>The key prefix of SDXL's first text encoder (CLIP ViT-L in the transformers layout).</summary>
    public const string SdxlClipPrefix = "conditioner.embedders.0.transformer.";

    /// <summary>The key prefix of SDXL's second text encoder (OpenCLIP ViT-bigG in its own layout, with <c>text_projection</c>).</summary>
    public const string SdxlOpenClipPrefix = "conditioner.embedders.1.model.";

    [GeneratedRegex(@"^transformer\.resblocks\.(\d+)\.(.+)$")]
    private static partial Regex ResBlock();

    private static readonly (string OpenClip, string Clip)[] ResBlockNames =
    [
        ("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2."),
        ("attn.out_proj.", "self_attn.out_proj."),
    ];

    /// <summary>Which text-encoder layout <paramref name="file"/> uses, or null when it has neither.</summary>
    public static TextEncoderLayout? Detect(SafetensorsFile file)
    {
        if (file.Entries.Keys.Any(k => k.StartsWith(ClipPrefix, StringComparison.Ordinal))) return TextEncoderLayout.Clip;
        if (file.Entries.Keys.Any(k => k.StartsWith(OpenClipPrefix + "transformer.", StringComparison.Ordinal))) return TextEncoderLayout.OpenClip;
        return null;
    }

    /// <summary>Number of transformer layers stored in the file in the given layout.</summary>
    public static int StoredLayerCount(SafetensorsFile file, TextEncoderLayout layout)
    {
        var pattern = layout == TextEncoderLayout.Clip
            ? new Regex(@"^cond_stage_model\.transformer\.(?:text_model\.)?encoder\.layers\.(\d+)\.")
            : new Regex(@"^cond_stage_model\.model\.transformer\.resblocks\.(\d+)\.");
        return file.Entries.Keys.Select(k => (Key: k, Match: pattern.Match(k))).Where(p => p.Match.Success)
            .Select(p => KeyIndex.Parse(p.Match.Groups[1].Value, p.Key, file.Path)).DefaultIfEmpty(-1).Max() + 1;
    }

    /// <summary>
    /// Maps the text encoder of <paramref name="file"/>; the original keys used are added to <paramref name="claimed"/>.
    /// The <c>position_ids</c> buffer (a constant the model computes itself) is left unclaimed.
    /// </summary>
    /// <param name="file">The checkpoint.</param>
    /// <param name="layout">Its text-encoder layout (see <see cref="Detect"/>).</param>
    /// <param name="claimed">Receives the original keys used.</param>
    /// <param name="layers">
    /// OpenCLIP only: how many of the stored residual blocks to keep. SD 2.x conditions on the penultimate block's output
    /// (then the final layer norm), so the reference keeps all but the last block (23 of 24) and leaves the last one, and
    /// the CLIP-space <c>text_projection</c>, unused; null means exactly that. Ignored for <see cref="TextEncoderLayout.Clip"/>.
    /// </param>
    /// <exception cref="InvalidDataException">Two tensors map to one name, or a fused projection does not split in three.</exception>
    public static Dictionary<string, TensorRef> Map(SafetensorsFile file, TextEncoderLayout layout, ISet<string> claimed, int? layers = null)
        => layout == TextEncoderLayout.Clip ? MapClip(file, ClipPrefix, claimed)
            : MapOpenClip(file, OpenClipPrefix, claimed, layers ?? Math.Max(StoredLayerCount(file, layout) - 1, 1), withProjection: false);

    /// <summary>
    /// Maps SDXL's first text encoder (<c>conditioner.embedders.0.transformer.*</c>, CLIP names) as <see cref="Map"/>
    /// maps an SD 1.x one; null when the file has none (a refiner).
    /// </summary>
    /// <exception cref="InvalidDataException">Two tensors map to one name.</exception>
    public static Dictionary<string, TensorRef>? MapSdxlFirst(SafetensorsFile file, ISet<string> claimed)
        => file.Entries.Keys.Any(k => k.StartsWith(SdxlClipPrefix, StringComparison.Ordinal)) ? MapClip(file, SdxlClipPrefix, claimed) : null;

    /// <summary>
    /// Maps SDXL's second text encoder (<c>conditioner.embedders.1.model.*</c>, OpenCLIP layout) to the names of
    /// transformers' <c>CLIPTextModelWithProjection</c>: every residual block (SDXL reads the penultimate hidden state
    /// and pools the last), the fused <c>in_proj</c> split into q, k, v, and <c>text_projection</c> [hidden, projection]
    /// transposed into <c>text_projection.weight</c> [projection, hidden]. <c>logit_scale</c> is left unclaimed.
    /// </summary>
    /// <exception cref="InvalidDataException">Two tensors map to one name, a fused projection does not split in three, or the projection is not a matrix.</exception>
    public static Dictionary<string, TensorRef> MapSdxlSecond(SafetensorsFile file, ISet<string> claimed)
        => MapSdxlOpenClip(file, SdxlOpenClipPrefix, claimed);

    /// <summary>
    /// As <see cref="MapSdxlSecond(SafetensorsFile, ISet{string})"/> for an OpenCLIP encoder stored under
    /// <paramref name="prefix"/> (the SDXL refiner keeps its only encoder as <c>conditioner.embedders.0.model.*</c>).
    /// </summary>
    /// <exception cref="InvalidDataException">Two tensors map to one name, a fused projection does not split in three, or the projection is not a matrix.</exception>
    public static Dictionary<string, TensorRef> MapSdxlOpenClip(SafetensorsFile file, string prefix, ISet<string> claimed)
        => MapOpenClip(file, prefix, claimed, int.MaxValue, withProjection: true);

    private static Dictionary<string, TensorRef> MapClip(SafetensorsFile file, string prefix, ISet<string> claimed)
    {
        var map = new KeyMapBuilder(file, claimed);
        foreach (var key in file.Entries.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal)))
        {
            string name = key[prefix.Length..];
            // Checkpoints saved with very old transformers versions lack the text_model level.
            if (name.StartsWith("text_model.", StringComparison.Ordinal)) name = name["text_model.".Length..];
            if (name == "embeddings.position_ids") continue;
            if (name.StartsWith("encoder.layers.", StringComparison.Ordinal))
            {
                // The layer number becomes num_hidden_layers; refuse absurd ones here, where the original key is known.
                string rest = name["encoder.layers.".Length..];
                int dot = rest.IndexOf('.');
                KeyIndex.Parse(dot < 0 ? rest : rest[..dot], key, file.Path);
                map.Add(name, key);
            }
            else if (name.StartsWith("embeddings.", StringComparison.Ordinal) || name.StartsWith("final_layer_norm.", StringComparison.Ordinal))
                map.Add(name, key);
        }
        return map.Weights;
    }

    private static Dictionary<string, TensorRef> MapOpenClip(SafetensorsFile file, string keyPrefix, ISet<string> claimed, int layers, bool withProjection)
    {
        var map = new KeyMapBuilder(file, claimed);
        foreach (var key in file.Entries.Keys.Where(k => k.StartsWith(keyPrefix, StringComparison.Ordinal)))
        {
            string name = key[keyPrefix.Length..];
            if (withProjection && name == "text_projection") { map.AddTransposed("text_projection.weight", key); continue; }
            switch (name)
            {
                case "positional_embedding": map.Add("embeddings.position_embedding.weight", key); continue;
                case "token_embedding.weight": map.Add("embeddings.token_embedding.weight", key); continue;
                case "ln_final.weight": map.Add("final_layer_norm.weight", key); continue;
                case "ln_final.bias": map.Add("final_layer_norm.bias", key); continue;
            }
            var m = ResBlock().Match(name);
            if (!m.Success) continue;
            int layer = KeyIndex.Parse(m.Groups[1].Value, key, file.Path);
            if (layer >= layers) continue;
            string prefix = $"encoder.layers.{layer}.", rest = m.Groups[2].Value;
            if (rest is "attn.in_proj_weight" or "attn.in_proj_bias")
            {
                // PyTorch's MultiheadAttention stacks the q, k and v projections along the output dimension.
                string suffix = rest.EndsWith("weight", StringComparison.Ordinal) ? "weight" : "bias";
                map.AddSlice($"{prefix}self_attn.q_proj.{suffix}", key, 0, 3);
                map.AddSlice($"{prefix}self_attn.k_proj.{suffix}", key, 1, 3);
                map.AddSlice($"{prefix}self_attn.v_proj.{suffix}", key, 2, 3);
                continue;
            }
            foreach (var (open, clip) in ResBlockNames)
                if (rest.StartsWith(open, StringComparison.Ordinal)) { map.Add(prefix + clip + rest[open.Length..], key); break; }
        }
        return map.Weights;
    }
}
