using System.Text.RegularExpressions;
using LatentDiffusion.Formats;

namespace LatentDiffusion.Loading.SingleFile;

/// <summary>
/// Names the UNet tensors of an original (LDM/CompVis) checkpoint, <c>model.diffusion_model.*</c>, the way the
/// reference <c>UNet2DConditionModel</c> names its parameters.
/// </summary>
/// <remarks>
/// The original model is one flat list of <c>input_blocks</c> (convolution in, then per resolution level some resnet
/// blocks, each optionally followed by a spatial transformer, then a downsampler except at the last level), a
/// <c>middle_block</c> (resnet, transformer, resnet) and <c>output_blocks</c> (per level one more resnet than going
/// down, the level's last block ending in an upsampler except at the last level). The levels are recovered by walking
/// those lists, so neither <c>layers_per_block</c> nor the number of levels has to be known in advance.
/// </remarks>
public static partial class UNetKeyMap
{
    /// <summary>The key prefix of the UNet in an original checkpoint.</summary>
    public const string Prefix = "model.diffusion_model.";

    /// <summary>The original resnet sub-layer names and the reference's names for them.</summary>
    private static readonly (string Ldm, string Diffusers)[] ResnetNames =
    [
        ("in_layers.0.", "norm1."), ("in_layers.2.", "conv1."), ("out_layers.0.", "norm2."), ("out_layers.3.", "conv2."),
        ("emb_layers.1.", "time_emb_proj."), ("skip_connection.", "conv_shortcut."),
    ];

    private static readonly (string Ldm, string Diffusers)[] TopLevelNames =
    [
        ("time_embed.0.", "time_embedding.linear_1."), ("time_embed.2.", "time_embedding.linear_2."),
        ("input_blocks.0.0.", "conv_in."), ("out.0.", "conv_norm_out."), ("out.2.", "conv_out."),
    ];

    // SDXL's added-conditioning MLP (the original names it a label embedding).
    private static readonly (string Ldm, string Diffusers)[] SdxlNames =
    [
        ("label_emb.0.0.", "add_embedding.linear_1."), ("label_emb.0.2.", "add_embedding.linear_2."),
    ];

    [GeneratedRegex(@"^(input_blocks|output_blocks)\.(\d+)\.(\d+)\.(.+)$")]
    private static partial Regex BlockKey();

    [GeneratedRegex(@"^middle_block\.(\d+)\.(.+)$")]
    private static partial Regex MiddleKey();

    /// <summary>
    /// Maps every UNet tensor of <paramref name="file"/> that has a place in the reference model; the original keys used
    /// are added to <paramref name="claimed"/>. Tensors of other UNet variants (class or add embeddings) stay unclaimed.
    /// </summary>
    /// <returns>The UNet's weights by reference name, e.g. <c>down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight</c>.</returns>
    /// <exception cref="InvalidDataException">Two tensors map to one name, or a projection has an impossible shape.</exception>
    public static Dictionary<string, TensorRef> Map(SafetensorsFile file, ISet<string> claimed) => Map(file, claimed, stableDiffusionXL: false);

    /// <summary>
    /// As <see cref="Map(SafetensorsFile, ISet{string})"/>; with <paramref name="stableDiffusionXL"/>, SDXL's
    /// <c>label_emb.0.{0,2}</c> (the added-conditioning MLP) is mapped to <c>add_embedding.linear_{1,2}</c> as well.
    /// </summary>
    /// <param name="file">The checkpoint.</param>
    /// <param name="claimed">Receives the original keys used.</param>
    /// <param name="stableDiffusionXL">The file is SDXL.</param>
    /// <exception cref="InvalidDataException">Two tensors map to one name, or a projection has an impossible shape.</exception>
    public static Dictionary<string, TensorRef> Map(SafetensorsFile file, ISet<string> claimed, bool stableDiffusionXL)
    {
        var map = new KeyMapBuilder(file, claimed);
        // block index -> sub-layer index -> (rest of the name, full key)
        var input = new SortedDictionary<int, SortedDictionary<int, List<(string Tail, string Key)>>>();
        var output = new SortedDictionary<int, SortedDictionary<int, List<(string Tail, string Key)>>>();

        foreach (var key in file.Entries.Keys.Where(k => k.StartsWith(Prefix, StringComparison.Ordinal)))
        {
            string name = key[Prefix.Length..];
            var top = TopLevelNames.FirstOrDefault(p => name.StartsWith(p.Ldm, StringComparison.Ordinal));
            if (top.Ldm is not null) { map.Add(top.Diffusers + name[top.Ldm.Length..], key); continue; }
            var added = stableDiffusionXL ? SdxlNames.FirstOrDefault(p => name.StartsWith(p.Ldm, StringComparison.Ordinal)) : default;
            if (added.Ldm is not null) { map.Add(added.Diffusers + name[added.Ldm.Length..], key); continue; }

            var mid = MiddleKey().Match(name);
            if (mid.Success)
            {
                string rest = mid.Groups[2].Value;
                switch (mid.Groups[1].Value)
                {
                    case "0": AddResnet(map, "mid_block.resnets.0.", rest, key); break;
                    case "1": AddAttention(map, "mid_block.attentions.0.", rest, key); break;
                    case "2": AddResnet(map, "mid_block.resnets.1.", rest, key); break;
                }
                continue;
            }

            var block = BlockKey().Match(name);
            if (!block.Success) continue;
            var target = block.Groups[1].Value == "input_blocks" ? input : output;
            int index = KeyIndex.Parse(block.Groups[2].Value, key, file.Path), sub = KeyIndex.Parse(block.Groups[3].Value, key, file.Path);
            if (!target.TryGetValue(index, out var subs)) target[index] = subs = [];
            if (!subs.TryGetValue(sub, out var list)) subs[sub] = list = [];
            list.Add((block.Groups[4].Value, key));
        }

        MapInputBlocks(map, input);
        MapOutputBlocks(map, output);
        return map.Weights;
    }

    private static void MapInputBlocks(KeyMapBuilder map, SortedDictionary<int, SortedDictionary<int, List<(string Tail, string Key)>>> input)
    {
        int level = 0, layer = 0;
        foreach (var (index, subs) in input)
        {
            if (index == 0) continue; // conv_in, mapped above
            if (subs.TryGetValue(0, out var first) && first.All(e => e.Tail.StartsWith("op.", StringComparison.Ordinal)))
            {
                foreach (var (rest, key) in first) map.Add($"down_blocks.{level}.downsamplers.0.conv.{rest["op.".Length..]}", key);
                level++;
                layer = 0;
                continue;
            }
            if (subs.TryGetValue(0, out var resnet))
                foreach (var (rest, key) in resnet) AddResnet(map, $"down_blocks.{level}.resnets.{layer}.", rest, key);
            if (subs.TryGetValue(1, out var attention))
                foreach (var (rest, key) in attention) AddAttention(map, $"down_blocks.{level}.attentions.{layer}.", rest, key);
            layer++;
        }
    }

    private static void MapOutputBlocks(KeyMapBuilder map, SortedDictionary<int, SortedDictionary<int, List<(string Tail, string Key)>>> output)
    {
        int level = 0, layer = 0;
        foreach (var (_, subs) in output)
        {
            bool upsampled = false;
            foreach (var (sub, entries) in subs)
            {
                if (sub == 0)
                    foreach (var (rest, key) in entries) AddResnet(map, $"up_blocks.{level}.resnets.{layer}.", rest, key);
                else if (entries.All(e => e.Tail is "conv.weight" or "conv.bias"))
                {
                    foreach (var (rest, key) in entries) map.Add($"up_blocks.{level}.upsamplers.0.{rest}", key);
                    upsampled = true;
                }
                else if (sub == 1)
                    foreach (var (rest, key) in entries) AddAttention(map, $"up_blocks.{level}.attentions.{layer}.", rest, key);
            }
            if (upsampled) { level++; layer = 0; }
            else layer++;
        }
    }

    private static void AddResnet(KeyMapBuilder map, string prefix, string rest, string key)
    {
        foreach (var (ldm, diffusers) in ResnetNames)
            if (rest.StartsWith(ldm, StringComparison.Ordinal)) { map.Add(prefix + diffusers + rest[ldm.Length..], key); return; }
    }

    private static void AddAttention(KeyMapBuilder map, string prefix, string rest, string key)
    {
        // The transformer's own names are already the reference's; only convolution-shaped q/k/v/out weights (some old
        // exports) must become linear weights.
        bool projection = rest.EndsWith(".weight", StringComparison.Ordinal)
            && (rest.Contains(".to_q.", StringComparison.Ordinal) || rest.Contains(".to_k.", StringComparison.Ordinal)
                || rest.Contains(".to_v.", StringComparison.Ordinal) || rest.Contains(".to_out.0.", StringComparison.Ordinal));
        if (projection) map.AddAsMatrix(prefix + rest, key);
        else map.Add(prefix + rest, key);
    }
}
