using System.Text.RegularExpressions;
using LatentDiffusion.Formats;

namespace LatentDiffusion.Loading.SingleFile;

/// <summary>
/// Names the VAE tensors of an original (LDM/CompVis) checkpoint, <c>first_stage_model.*</c>, the way the current
/// reference <c>AutoencoderKL</c> names its parameters (mid-block attention as <c>to_q</c>, <c>to_k</c>, <c>to_v</c>,
/// <c>to_out.0</c>, with linear [C, C] weights).
/// </summary>
/// <remarks>
/// The original decoder numbers its levels from the lowest resolution up (<c>decoder.up.0</c> is the last applied),
/// while the reference numbers them in the order they run, so decoder levels are reversed.
/// </remarks>
public static partial class VaeKeyMap
{
    /// <summary>The key prefix of the VAE in an original checkpoint.</summary>
    public const string Prefix = "first_stage_model.";

    [GeneratedRegex(@"^(encoder|decoder)\.(conv_in|conv_out)\.(weight|bias)$")]
    private static partial Regex Conv();

    [GeneratedRegex(@"^(encoder|decoder)\.norm_out\.(weight|bias)$")]
    private static partial Regex NormOut();

    [GeneratedRegex(@"^(quant_conv|post_quant_conv)\.(weight|bias)$")]
    private static partial Regex QuantConv();

    [GeneratedRegex(@"^(encoder\.down|decoder\.up)\.(\d+)\.block\.(\d+)\.(.+)$")]
    private static partial Regex LevelResnet();

    [GeneratedRegex(@"^(encoder\.down|decoder\.up)\.(\d+)\.(downsample|upsample)\.conv\.(weight|bias)$")]
    private static partial Regex LevelSampler();

    [GeneratedRegex(@"^(encoder|decoder)\.mid\.block_([12])\.(.+)$")]
    private static partial Regex MidResnet();

    [GeneratedRegex(@"^(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)$")]
    private static partial Regex MidAttention();

    /// <summary>
    /// Maps every VAE tensor of <paramref name="file"/> that has a place in the reference model; the original keys used
    /// are added to <paramref name="claimed"/>.
    /// </summary>
    /// <param name="file">The checkpoint.</param>
    /// <param name="claimed">Receives the original keys used.</param>
    /// <param name="prefix">The VAE's key prefix: <see cref="Prefix"/> in a whole checkpoint, empty in a standalone
    /// original-layout VAE file (such as the fine-tuned <c>vae-ft-mse</c> downloads, whose keys start at <c>encoder.</c>).</param>
    /// <returns>The VAE's weights by reference name, e.g. <c>encoder.mid_block.attentions.0.to_q.weight</c>.</returns>
    /// <exception cref="InvalidDataException">Two tensors map to one name, or an attention weight has an impossible shape.</exception>
    public static Dictionary<string, TensorRef> Map(SafetensorsFile file, ISet<string> claimed, string prefix = Prefix)
    {
        var map = new KeyMapBuilder(file, claimed);
        var keys = file.Entries.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal)).ToList();
        int upLevels = keys.Select(k => (Key: k, Match: LevelResnet().Match(k[prefix.Length..])))
            .Where(p => p.Match.Success && p.Match.Groups[1].Value == "decoder.up").Select(p => KeyIndex.Parse(p.Match.Groups[2].Value, p.Key, file.Path))
            .DefaultIfEmpty(-1).Max() + 1;

        foreach (var key in keys)
        {
            string name = key[prefix.Length..];
            Match m;
            if (Conv().IsMatch(name) || QuantConv().IsMatch(name)) map.Add(name, key);
            else if ((m = NormOut().Match(name)).Success) map.Add($"{m.Groups[1].Value}.conv_norm_out.{m.Groups[2].Value}", key);
            else if ((m = LevelResnet().Match(name)).Success)
            {
                string rest = m.Groups[4].Value.StartsWith("nin_shortcut.", StringComparison.Ordinal)
                    ? "conv_shortcut." + m.Groups[4].Value["nin_shortcut.".Length..] : m.Groups[4].Value;
                map.Add($"{Level(m.Groups[1].Value, KeyIndex.Parse(m.Groups[2].Value, key, file.Path), upLevels)}.resnets.{m.Groups[3].Value}.{rest}", key);
            }
            else if ((m = LevelSampler().Match(name)).Success)
            {
                string sampler = m.Groups[3].Value == "downsample" ? "downsamplers" : "upsamplers";
                map.Add($"{Level(m.Groups[1].Value, KeyIndex.Parse(m.Groups[2].Value, key, file.Path), upLevels)}.{sampler}.0.conv.{m.Groups[4].Value}", key);
            }
            else if ((m = MidResnet().Match(name)).Success)
                map.Add($"{m.Groups[1].Value}.mid_block.resnets.{(m.Groups[2].Value == "1" ? 0 : 1)}.{m.Groups[3].Value}", key);
            else if ((m = MidAttention().Match(name)).Success)
            {
                string part = m.Groups[2].Value switch { "norm" => "group_norm", "q" => "to_q", "k" => "to_k", "v" => "to_v", _ => "to_out.0" };
                string target = $"{m.Groups[1].Value}.mid_block.attentions.0.{part}.{m.Groups[3].Value}";
                if (part != "group_norm" && m.Groups[3].Value == "weight") map.AddAsMatrix(target, key);
                else map.Add(target, key);
            }
        }
        return map.Weights;
    }

    private static string Level(string side, int index, int upLevels)
        => side == "encoder.down" ? $"encoder.down_blocks.{index}" : $"decoder.up_blocks.{upLevels - 1 - index}";
}
