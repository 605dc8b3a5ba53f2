using System.Text.RegularExpressions;

namespace LatentDiffusion.Adapters;

/// <summary>
/// The original (SGM/LDM) names of a diffusers-layout UNet's modules: <c>input_blocks.4.1.transformer_blocks.0.attn1.to_q</c>
/// for <c>down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q</c>, <c>middle_block.0.in_layers.2</c> for
/// <c>mid_block.resnets.0.conv1</c>. kohya names SDXL LoRAs this way. The layout is derived from the module paths
/// themselves (how many resnets each level has, which levels sample down or up), the inverse of the single-file
/// checkpoint map <c>Loading.SingleFile.UNetKeyMap</c>, which the tests hold it to.
/// </summary>
internal static partial class SgmUNetNames
{
    private static readonly (string Diffusers, string Sgm)[] ResnetNames =
    [
        ("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
        ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"),
    ];

    private static readonly (string Diffusers, string Sgm)[] TopLevelNames =
    [
        ("conv_in", "input_blocks.0.0"), ("time_embedding.linear_1", "time_embed.0"), ("time_embedding.linear_2", "time_embed.2"),
        ("add_embedding.linear_1", "label_emb.0.0"), ("add_embedding.linear_2", "label_emb.0.2"),
        ("conv_norm_out", "out.0"), ("conv_out", "out.2"),
    ];

    [GeneratedRegex(@"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions)\.(\d+)(?:\.(.+))?$")]
    private static partial Regex BlockPath();

    [GeneratedRegex(@"^(down_blocks|up_blocks)\.(\d+)\.(downsamplers|upsamplers)\.0\.conv$")]
    private static partial Regex SamplerPath();

    [GeneratedRegex(@"^mid_block\.(resnets|attentions)\.(\d+)(?:\.(.+))?$")]
    private static partial Regex MidPath();

    /// <summary>
    /// The SGM name of each of <paramref name="paths"/> (diffusers module paths of one UNet, all of its modules or at
    /// least every resnet's <c>conv1</c>, every attention's modules and every sampler's <c>conv</c>) that has one.
    /// </summary>
    public static Dictionary<string, string> ToSgm(IReadOnlyCollection<string> paths)
    {
        // The layout: resnets per level, which levels sample, which up-block layers carry an attention.
        var downResnets = new SortedDictionary<int, int>();
        var upResnets = new SortedDictionary<int, int>();
        var downSamples = new HashSet<int>();
        var upAttentions = new HashSet<(int Level, int Layer)>();
        foreach (var path in paths)
        {
            var m = BlockPath().Match(path);
            if (m.Success)
            {
                int level = int.Parse(m.Groups[2].Value), layer = int.Parse(m.Groups[4].Value);
                bool down = m.Groups[1].Value == "down_blocks";
                if (m.Groups[3].Value == "resnets")
                {
                    var counts = down ? downResnets : upResnets;
                    counts[level] = Math.Max(counts.GetValueOrDefault(level), layer + 1);
                }
                else if (!down) upAttentions.Add((level, layer));
                continue;
            }
            var s = SamplerPath().Match(path);
            if (s.Success && s.Groups[1].Value == "down_blocks") downSamples.Add(int.Parse(s.Groups[2].Value));
        }
        int levels = Math.Max(downResnets.Keys.DefaultIfEmpty(-1).Max(), upResnets.Keys.DefaultIfEmpty(-1).Max()) + 1;
        // The first input block of each level (after conv_in) and the first output block of each level.
        var inputStart = new int[levels + 1];
        var outputStart = new int[levels + 1];
        inputStart[0] = 1;
        for (int i = 0; i < levels; i++)
        {
            inputStart[i + 1] = inputStart[i] + downResnets.GetValueOrDefault(i) + (downSamples.Contains(i) ? 1 : 0);
            outputStart[i + 1] = outputStart[i] + upResnets.GetValueOrDefault(i);
        }

        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var path in paths)
            if (Map(path, inputStart, outputStart, downResnets, upResnets, upAttentions) is { } sgm)
                result[path] = sgm;
        return result;
    }

    private static string? Map(string path, int[] inputStart, int[] outputStart, SortedDictionary<int, int> downResnets,
        SortedDictionary<int, int> upResnets, HashSet<(int Level, int Layer)> upAttentions)
    {
        foreach (var (diffusers, sgm) in TopLevelNames)
            if (path == diffusers) return sgm;

        var m = BlockPath().Match(path);
        if (m.Success)
        {
            int level = int.Parse(m.Groups[2].Value), layer = int.Parse(m.Groups[4].Value);
            if (level >= inputStart.Length - 1) return null;
            bool resnet = m.Groups[3].Value == "resnets";
            string? rest = m.Groups[5].Success ? m.Groups[5].Value : null;
            string block = m.Groups[1].Value == "down_blocks"
                ? $"input_blocks.{inputStart[level] + layer}.{(resnet ? 0 : 1)}"
                : $"output_blocks.{outputStart[level] + layer}.{(resnet ? 0 : 1)}";
            return Join(block, resnet ? ResnetPart(rest) : rest, rest);
        }

        var s = SamplerPath().Match(path);
        if (s.Success)
        {
            int level = int.Parse(s.Groups[2].Value);
            if (level >= inputStart.Length - 1) return null;
            if (s.Groups[1].Value == "down_blocks")
                return $"input_blocks.{inputStart[level] + downResnets.GetValueOrDefault(level)}.0.op";
            // The up-sampler ends the level's last output block, after its resnet (and attention, if it has one).
            int last = upResnets.GetValueOrDefault(level) - 1;
            if (last < 0) return null;
            return $"output_blocks.{outputStart[level] + last}.{(upAttentions.Contains((level, last)) ? 2 : 1)}.conv";
        }

        var mid = MidPath().Match(path);
        if (mid.Success)
        {
            int index = int.Parse(mid.Groups[2].Value);
            bool resnet = mid.Groups[1].Value == "resnets";
            string? rest = mid.Groups[3].Success ? mid.Groups[3].Value : null;
            // middle_block is resnet, attention, resnet.
            string block = resnet ? $"middle_block.{2 * index}" : $"middle_block.{2 * index + 1}";
            return Join(block, resnet ? ResnetPart(rest) : rest, rest);
        }
        return null;
    }

    private static string? ResnetPart(string? rest)
    {
        if (rest is null) return null;
        foreach (var (diffusers, sgm) in ResnetNames)
            if (rest == diffusers) return sgm;
        return "\0";
    }

    private static string? Join(string block, string? mapped, string? rest)
    {
        if (rest is null) return block;
        return mapped == "\0" ? null : $"{block}.{mapped}";
    }
}
