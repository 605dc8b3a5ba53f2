using LatentDiffusion.Abstractions;
using LatentDiffusion.Schedulers;

namespace LatentDiffusion.Cli;

/// <summary>
/// Scheduler names as <c>--scheduler</c> takes them: this library's short names (<c>euler-a</c>), AUTOMATIC1111's names
/// (<c>"Euler a"</c>), and stable-diffusion.cpp's <c>--sampling-method</c> names (<c>euler_a</c>, <c>dpm2</c>,
/// <c>ddim_trailing</c>) where this library has the sampler.
/// </summary>
internal static class SamplerNames
{
    // stable-diffusion.cpp sampling methods that are not a short name with '_' for '-'.
    private static readonly Dictionary<string, (string Name, string? Spacing)> SdCpp = new(StringComparer.OrdinalIgnoreCase)
    {
        ["dpm2"] = ("kdpm2", null),
        ["ddim_trailing"] = ("ddim", "trailing"),
    };

    // stable-diffusion.cpp sampling methods with no counterpart here, and what to use instead.
    private static readonly Dictionary<string, string> Missing = new(StringComparer.OrdinalIgnoreCase)
    {
        ["dpm++2mv2"] = "dpm++2m",
        ["ipndm"] = "pndm",
        ["ipndm_v"] = "pndm",
    };

    /// <summary>
    /// The library's short name for <paramref name="given"/>, and a <c>timestep_spacing</c> it implies (null for none).
    /// </summary>
    /// <exception cref="ArgumentException">No scheduler of that name here (the message names the closest one).</exception>
    public static (string Name, string? Spacing) Resolve(string given)
    {
        string name = given.Trim();
        if (SchedulerRegistry.Names.FirstOrDefault(n => n.Equals(name, StringComparison.OrdinalIgnoreCase)) is { } own) return (own, null);
        if (SdCpp.TryGetValue(name, out var mapped)) return mapped;
        string dashed = name.Replace('_', '-');
        if (SchedulerRegistry.Names.FirstOrDefault(n => n.Equals(dashed, StringComparison.OrdinalIgnoreCase)) is { } sdcpp) return (sdcpp, null);
        if (SchedulerRegistry.Names.FirstOrDefault(n => SchedulerRegistry.A1111NameOf(n).Equals(name, StringComparison.OrdinalIgnoreCase)) is { } a1111) return (a1111, null);
        if (Missing.TryGetValue(name, out var instead))
            throw new ArgumentException($"--scheduler '{given}' (a stable-diffusion.cpp sampler) has no counterpart here; the closest is {instead} (supported: {string.Join(", ", SchedulerRegistry.Names)}).");
        throw new ArgumentException($"--scheduler '{given}' is not a known scheduler (supported: {string.Join(", ", SchedulerRegistry.Names)}; stable-diffusion.cpp and AUTOMATIC1111 names are accepted too).");
    }

    /// <summary>AUTOMATIC1111's name for the sampler a generation used: the named one, or the model's own scheduler.</summary>
    public static string A1111Label(string? name, IScheduler modelScheduler)
    {
        if (name is not null) return SchedulerRegistry.A1111NameOf(name);
        string className = modelScheduler.ClassName;
        var config = modelScheduler.Config;
        if (className == "DPMSolverMultistepScheduler")
        {
            bool karras = config.Bool("use_karras_sigmas", false);
            bool sde = config.String("algorithm_type", "dpmsolver++")!.StartsWith("sde", StringComparison.Ordinal);
            return SchedulerRegistry.A1111NameOf(karras ? (sde ? "dpm++2m-sde-karras" : "dpm++2m-karras") : "dpm++2m");
        }
        var first = SchedulerRegistry.Names.FirstOrDefault(n => SchedulerRegistry.ClassNameOf(n) == className);
        return first is null ? className : SchedulerRegistry.A1111NameOf(first);
    }
}
