using System.Reflection;
using System.Text.RegularExpressions;
using NetArchTest.Rules;

namespace LatentDiffusion.Tests.Architecture;

/// <summary>
/// The library's layers (one namespace each, sub-namespaces included) and which others each may use. Anything of ours
/// not listed for a layer is forbidden to it: a lower layer never reaches up, and the model parts never reach sideways.
/// </summary>
internal static class Layers
{
    private static readonly string[] Bottom = ["Runtime", "Formats"];
    private static readonly string[] UnderBlocks = [.. Bottom, "Abstractions"];
    // The neural-network blocks the model parts share (one ResnetBlock2D, one Attention for the UNet and the VAE).
    private static readonly string[] UnderParts = [.. UnderBlocks, "Layers"];
    // Adapters (LoRA) stand beside the model parts: they hook the Linear and Conv2d modules of any part by path (TorchSharp's,
    // or Layers' UpcastLinear/UpcastConv2d that hold float16 weights), knowing no part's types, and the layers above use
    // them as they use the parts.
    private static readonly string[] Parts = ["Text", "UNet", "Vae", "Schedulers", "Adapters"];

    public static readonly IReadOnlyDictionary<string, string[]> MayUse = new Dictionary<string, string[]>
    {
        ["Runtime"] = [],
        ["Formats"] = ["Runtime"],
        ["Abstractions"] = Bottom,
        ["Layers"] = UnderBlocks,
        // The model parts: each on its own, never importing another part.
        ["Text"] = UnderParts,
        ["UNet"] = UnderParts,
        ["Vae"] = UnderParts,
        ["Schedulers"] = UnderParts,
        ["Adapters"] = UnderParts,
        // On top: Loading reads whole-model files into parts, Pipelines assemble and run them, Integration adapts them.
        // Loading fetches a single file's tokenizer through Hub; PipelineOptions names the Hub options for it.
        ["Loading"] = [.. UnderParts, .. Parts, "Hub"],
        ["Pipelines"] = [.. UnderParts, .. Parts, "Loading", "Hub"],
        ["Integration"] = [.. UnderParts, .. Parts, "Loading", "Pipelines"],
        // Beside everything: Hub downloads model files (HTTP and the cache), knowing nothing of the model parts.
        ["Hub"] = Bottom,
    };

    /// <summary>
    /// One line per type under <paramref name="root"/>.X that depends on a root.Y which X may not use, with the
    /// dependency that breaks the rule. Dependencies are read from the compiled code (signatures, fields, method bodies).
    /// </summary>
    public static List<string> Violations(Assembly assembly, string root, IReadOnlyDictionary<string, string[]> mayUse)
    {
        var lines = new List<string>();
        foreach (var (layer, allowed) in mayUse)
        {
            var forbidden = mayUse.Keys.Where(k => k != layer && !allowed.Contains(k)).Select(k => $"{root}.{k}").ToArray();
            if (forbidden.Length == 0) continue;
            var result = Types.InAssembly(assembly)
                .That().ResideInNamespaceMatching($@"^{Regex.Escape(root)}\.{layer}(\.|$)")
                .Should().NotHaveDependencyOnAny(forbidden)
                .GetResult();
            if (!result.IsSuccessful)
                lines.AddRange(result.FailingTypes.Select(t => $"{layer}: {t.FullName} -> {t.Explanation}"));
        }
        return lines;
    }

    /// <summary>The first namespace part under <paramref name="root"/> of every type there (e.g. "Loading" for Loading.SingleFile).</summary>
    public static SortedSet<string> TopNamespaces(Assembly assembly, string root) =>
        new(assembly.GetTypes()
            .Select(t => t.Namespace)
            .Where(ns => ns is not null && (ns == root || ns.StartsWith(root + ".", StringComparison.Ordinal)))
            .Select(ns => ns == root ? "" : ns![(root.Length + 1)..].Split('.')[0]));
}
