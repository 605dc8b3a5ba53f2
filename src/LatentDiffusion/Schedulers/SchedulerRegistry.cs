using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// Schedulers by short name (for options and the CLI) and by the reference's <c>_class_name</c>. A named scheduler is
/// built like the reference's <c>X.from_config(model_scheduler_config, **overrides)</c>: the model's keys the class
/// knows, the class's defaults for the rest; the settings that define a name (e.g. Karras sigmas for
/// <c>dpm++2m-karras</c>) are applied on top, and explicit overrides last. A user's scheduler joins the registry with
/// <see cref="Register"/> and is then chosen by name everywhere a built-in one is (<c>GenerationOptions.Scheduler</c>,
/// <c>ldm --scheduler</c>, a config's <c>_class_name</c>).
/// </summary>
public static class SchedulerRegistry
{
    private sealed record Entry(string Name, string ClassName, string A1111Name, SchedulerFactory Create, IReadOnlyDictionary<string, string> Implied, bool BuiltIn = true);

    private static readonly Dictionary<string, string> None = [];
    private static readonly object RegistrationLock = new();

    // Copy-on-write: readers take the current array without locking; Register and Unregister swap in a new one.
    private static Entry[] _entries = BuiltIn();

    private static Entry[] BuiltIn() =>
    [
        new("ddim", "DDIMScheduler", "DDIM", CreateDdim, None),
        new("ddpm", "DDPMScheduler", "DDPM", (c, o) => new DdpmScheduler(c, o), None),
        new("pndm", "PNDMScheduler", "PLMS", (c, o) => new PndmScheduler(c, o), None),
        new("lms", "LMSDiscreteScheduler", "LMS", (c, o) => new LmsDiscreteScheduler(c, o), None),
        new("euler", "EulerDiscreteScheduler", "Euler", (c, o) => new EulerDiscreteScheduler(c, o), None),
        new("euler-a", "EulerAncestralDiscreteScheduler", "Euler a", (c, o) => new EulerAncestralDiscreteScheduler(c, o), None),
        new("heun", "HeunDiscreteScheduler", "Heun", (c, o) => new HeunDiscreteScheduler(c, o), None),
        new("dpm++2m", "DPMSolverMultistepScheduler", "DPM++ 2M", (c, o) => new DpmSolverMultistepScheduler(c, o),
            new Dictionary<string, string> { ["algorithm_type"] = "dpmsolver++", ["use_karras_sigmas"] = "false" }),
        new("dpm++2m-karras", "DPMSolverMultistepScheduler", "DPM++ 2M Karras", (c, o) => new DpmSolverMultistepScheduler(c, o),
            new Dictionary<string, string> { ["algorithm_type"] = "dpmsolver++", ["use_karras_sigmas"] = "true" }),
        new("dpm++2m-sde-karras", "DPMSolverMultistepScheduler", "DPM++ 2M SDE Karras", (c, o) => new DpmSolverMultistepScheduler(c, o),
            new Dictionary<string, string> { ["algorithm_type"] = "sde-dpmsolver++", ["use_karras_sigmas"] = "true" }),
        new("dpm++2s", "DPMSolverSinglestepScheduler", "DPM++ 2S", (c, o) => new DpmSolverSinglestepScheduler(c, o),
            new Dictionary<string, string> { ["algorithm_type"] = "dpmsolver++" }),
        new("kdpm2", "KDPM2DiscreteScheduler", "DPM2", (c, o) => new KDpm2DiscreteScheduler(c, o), None),
        new("kdpm2-a", "KDPM2AncestralDiscreteScheduler", "DPM2 a", (c, o) => new KDpm2AncestralDiscreteScheduler(c, o), None),
        new("unipc", "UniPCMultistepScheduler", "UniPC", (c, o) => new UniPcMultistepScheduler(c, o), None),
        new("deis", "DEISMultistepScheduler", "DEIS", (c, o) => new DeisMultistepScheduler(c, o), None),
        new("lcm", "LCMScheduler", "LCM", (c, o) => new LcmScheduler(c, o), None),
        // Added samplers and variants (issue 12); each name implies the settings that define it.
        new("dpm++2m-sde", "DPMSolverMultistepScheduler", "DPM++ 2M SDE", (c, o) => new DpmSolverMultistepScheduler(c, o),
            new Dictionary<string, string> { ["algorithm_type"] = "sde-dpmsolver++", ["use_karras_sigmas"] = "false" }),
        new("dpm++3m-sde", "DPMSolverMultistepScheduler", "DPM++ 3M SDE", (c, o) => new DpmSolverMultistepScheduler(c, o),
            new Dictionary<string, string> { ["algorithm_type"] = "sde-dpmsolver++", ["solver_order"] = "3", ["use_karras_sigmas"] = "false" }),
        new("dpm++3m-sde-karras", "DPMSolverMultistepScheduler", "DPM++ 3M SDE Karras", (c, o) => new DpmSolverMultistepScheduler(c, o),
            new Dictionary<string, string> { ["algorithm_type"] = "sde-dpmsolver++", ["solver_order"] = "3", ["use_karras_sigmas"] = "true" }),
        new("dpm++2s-a", DpmSolverPlusPlus2SAncestralScheduler.Name, "DPM++ 2S a", (c, o) => new DpmSolverPlusPlus2SAncestralScheduler(c, o), None),
        new("tcd", "TCDScheduler", "TCD", CreateTcd, None),
        new("dpm++sde", "DPMSolverSDEScheduler", "DPM++ SDE", (c, o) => new DpmSolverSdeScheduler(c, o),
            new Dictionary<string, string> { ["use_karras_sigmas"] = "false" }),
        new("dpm++sde-karras", "DPMSolverSDEScheduler", "DPM++ SDE Karras", (c, o) => new DpmSolverSdeScheduler(c, o),
            new Dictionary<string, string> { ["use_karras_sigmas"] = "true" }),
        new("edm-euler", "EDMEulerScheduler", "Euler (EDM)", (c, o) => new EdmEulerScheduler(c, o), None),
        new("edm-dpm++2m", "EDMDPMSolverMultistepScheduler", "DPM++ 2M (EDM)", (c, o) => new EdmDpmSolverMultistepScheduler(c, o),
            new Dictionary<string, string> { ["algorithm_type"] = "dpmsolver++" }),
        new("edm-dpm++2m-sde", "EDMDPMSolverMultistepScheduler", "DPM++ 2M SDE (EDM)", (c, o) => new EdmDpmSolverMultistepScheduler(c, o),
            new Dictionary<string, string> { ["algorithm_type"] = "sde-dpmsolver++" }),
    ];

    /// <summary>The supported short names in a stable order: the built-in ones, then registered ones in the order registered.</summary>
    public static IReadOnlyList<string> Names => Volatile.Read(ref _entries).Select(e => e.Name).ToArray();

    /// <summary>The supported class names (<c>_class_name</c> values), registered ones included.</summary>
    public static IReadOnlyList<string> ClassNames => Volatile.Read(ref _entries).Select(e => e.ClassName).Distinct().ToArray();

    /// <summary>
    /// Adds a scheduler of the user's to the registry, for this process: from then on <paramref name="name"/> works
    /// wherever a built-in name does (<see cref="Create"/>, <c>GenerationOptions.Scheduler</c> with its
    /// <c>SchedulerOverrides</c>, the CLI's <c>--scheduler</c>), and a scheduler config whose <c>_class_name</c> is
    /// <paramref name="className"/> is built by <paramref name="factory"/> in <see cref="FromConfig"/>. The factory gets
    /// the model's scheduler config (null for none) and the overrides, as the built-in classes do; schedule-family
    /// suffixes (<c>-karras</c>) apply to built-in samplers only.
    /// </summary>
    /// <param name="name">The short name (letters, digits and <c>-+_.</c>); compared without regard to case.</param>
    /// <param name="factory">Builds the scheduler from the model's scheduler config and the overrides.</param>
    /// <param name="className">The <c>_class_name</c> that selects it in a config; default <paramref name="name"/>.</param>
    /// <param name="a1111Name">The name for AUTOMATIC1111-style labels; default <paramref name="name"/>.</param>
    /// <exception cref="ArgumentException">The name is empty, malformed or taken (by a built-in or a registered scheduler).</exception>
    public static void Register(string name, SchedulerFactory factory, string? className = null, string? a1111Name = null)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(factory);
        name = name.Trim();
        if (name.Length == 0 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '+' or '_' or '.'))
            throw new ArgumentException($"Scheduler name '{name}' must be non-empty and use only letters, digits and -+_.", nameof(name));
        lock (RegistrationLock)
        {
            var current = _entries;
            if (current.Any(e => string.Equals(e.Name, name, StringComparison.OrdinalIgnoreCase)))
                throw new ArgumentException($"A scheduler named '{name}' is already registered.", nameof(name));
            Volatile.Write(ref _entries, [.. current, new Entry(name, className ?? name, a1111Name ?? name, factory, None, BuiltIn: false)]);
        }
    }

    /// <summary>Removes a scheduler added with <see cref="Register"/>; false when no registered scheduler has that name (built-in ones stay).</summary>
    public static bool Unregister(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        lock (RegistrationLock)
        {
            var current = _entries;
            var kept = current.Where(e => e.BuiltIn || !string.Equals(e.Name, name.Trim(), StringComparison.OrdinalIgnoreCase)).ToArray();
            if (kept.Length == current.Length) return false;
            Volatile.Write(ref _entries, kept);
            return true;
        }
    }

    /// <summary>The reference class behind a short name.</summary>
    /// <exception cref="ArgumentException">Unknown name.</exception>
    public static string ClassNameOf(string name) => FindWithSchedule(name).Entry.ClassName;

    /// <summary>The name the AUTOMATIC1111 web UI uses for a short name (e.g. "DPM++ 2M Karras").</summary>
    /// <exception cref="ArgumentException">Unknown name.</exception>
    public static string A1111NameOf(string name)
    {
        var (entry, family) = FindWithSchedule(name);
        return family is null ? entry.A1111Name : $"{entry.A1111Name} {SigmaScheduleFamilies.A1111Label(family)}";
    }

    /// <summary>
    /// Builds the named scheduler from the model's scheduler config (keys the class does not know are ignored, missing
    /// keys take the class's defaults) plus <paramref name="overrides"/> (config keys of the class, values as text,
    /// e.g. <c>use_karras_sigmas=true</c>; for <c>ddim</c> and <c>tcd</c> also <c>eta</c>; for the sigma samplers also
    /// <c>schedule</c>, a family as popular UIs name it: karras, exponential, beta, normal, simple, sgm_uniform,
    /// ddim_uniform). A name may carry a schedule family as a suffix, e.g. <c>euler-sgm_uniform</c> or <c>heun-beta</c>.
    /// </summary>
    /// <exception cref="ArgumentException">Unknown name, or an override key the class does not have.</exception>
    /// <exception cref="NotSupportedException">A config value the library does not implement.</exception>
    public static IScheduler Create(string name, JsonConfig? modelSchedulerConfig, IReadOnlyDictionary<string, string>? overrides = null)
    {
        var (entry, suffix) = FindWithSchedule(name);
        var merged = new Dictionary<string, string>(entry.Implied);
        if (overrides is not null) foreach (var (k, v) in overrides) merged[k] = v;
        return CreateWithSchedule(entry, suffix, modelSchedulerConfig, merged, overrides);
    }

    /// <summary>Builds <paramref name="entry"/>'s class, applying a schedule family from the name suffix or the <c>schedule</c> override.</summary>
    private static IScheduler CreateWithSchedule(Entry entry, string? suffix, JsonConfig? modelSchedulerConfig, Dictionary<string, string> merged, IReadOnlyDictionary<string, string>? overrides)
    {
        string? family = suffix;
        if (merged.Remove(SigmaScheduleFamilies.Key, out var chosen))
            family = SigmaScheduleFamilies.Normalise(chosen)
                ?? throw new ArgumentException($"Unknown schedule '{chosen}' (supported: {string.Join(", ", SigmaScheduleFamilies.All)}).", nameof(overrides));
        if (family is not null)
        {
            foreach (var spacing in new[] { "karras", "exponential", "beta" })
                if (spacing != family && overrides is not null && overrides.TryGetValue($"use_{spacing}_sigmas", out var on) && on.Trim().Equals("true", StringComparison.OrdinalIgnoreCase))
                    throw new ArgumentException($"Schedule '{family}' contradicts the override use_{spacing}_sigmas=true.", nameof(overrides));
            modelSchedulerConfig = ApplySchedule(entry, family, modelSchedulerConfig, merged);
        }
        return entry.Create(modelSchedulerConfig, merged);
    }

    /// <summary>The classes that build their sigmas with <see cref="SigmaSchedule.Build"/>, where every schedule family applies.</summary>
    private static readonly string[] SigmaSamplers =
    [
        "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler", "LMSDiscreteScheduler", "KDPM2DiscreteScheduler",
        "KDPM2AncestralDiscreteScheduler", DpmSolverPlusPlus2SAncestralScheduler.Name, "DPMSolverSDEScheduler",
    ];

    /// <summary>
    /// Applies a schedule family (a name suffix such as <c>-sgm_uniform</c>, or the <c>schedule</c> override): through the
    /// class's own <c>use_*_sigmas</c> key where it has one (EDM: <c>sigma_schedule</c>), otherwise as the extension key
    /// <c>schedule</c> in the config the sigma samplers read.
    /// </summary>
    private static JsonConfig? ApplySchedule(Entry entry, string family, JsonConfig? config, Dictionary<string, string> merged)
    {
        var keys = KeysOf(entry.ClassName);
        if (entry.ClassName is "EDMEulerScheduler" or "EDMDPMSolverMultistepScheduler")
        {
            if (family is not ("karras" or "exponential"))
                throw new NotSupportedException($"{entry.ClassName}: schedule '{family}' is not supported (supported: karras, exponential).");
            merged["sigma_schedule"] = family;
            return config;
        }
        bool sigmaSampler = SigmaSamplers.Contains(entry.ClassName);
        bool custom = SigmaScheduleFamilies.Custom.Contains(family);
        if (!sigmaSampler && (custom || !keys.Contains("use_karras_sigmas")))
            throw new NotSupportedException($"{entry.ClassName}: schedule '{family}' is not supported" + (keys.Contains("use_karras_sigmas")
                ? " (supported: karras, exponential, beta)." : $"; schedules apply to the sigma samplers ({string.Join(", ", SigmaSamplers)}) and, as karras/exponential/beta, to the exponential-integrator solvers."));
        if (keys.Contains("use_karras_sigmas"))
        {
            foreach (var spacing in new[] { "karras", "exponential", "beta" })
                merged[$"use_{spacing}_sigmas"] = (spacing == family).ToString().ToLowerInvariant();
            if (!custom) return config;
        }
        var node = config is null ? new System.Text.Json.Nodes.JsonObject() : System.Text.Json.Nodes.JsonNode.Parse(config.Root.GetRawText())!.AsObject();
        node[SigmaScheduleFamilies.Key] = family;
        return SchedulerConfig.Parse(node.ToJsonString(), (config?.Source ?? "defaults") + $" with schedule {family}");
    }

    /// <summary>The config keys of a class.</summary>
    private static HashSet<string> KeysOf(string className)
    {
        IEnumerable<(string Key, object? Default)> defaults = className switch
        {
            "DDIMScheduler" => DdimScheduler.Defaults,
            "DDPMScheduler" => DdpmScheduler.Defaults,
            "LMSDiscreteScheduler" => LmsDiscreteScheduler.Defaults,
            "EulerDiscreteScheduler" => EulerDiscreteScheduler.Defaults,
            "EulerAncestralDiscreteScheduler" => EulerAncestralDiscreteScheduler.Defaults,
            "HeunDiscreteScheduler" => HeunDiscreteScheduler.Defaults,
            "DPMSolverMultistepScheduler" => DpmSolverMultistepScheduler.Defaults,
            "DPMSolverSinglestepScheduler" => DpmSolverSinglestepScheduler.Defaults,
            "KDPM2DiscreteScheduler" => KDpm2DiscreteScheduler.Defaults,
            "KDPM2AncestralDiscreteScheduler" => KDpm2AncestralDiscreteScheduler.Defaults,
            "UniPCMultistepScheduler" => UniPcMultistepScheduler.Defaults,
            "DEISMultistepScheduler" => DeisMultistepScheduler.Defaults,
            "LCMScheduler" => LcmScheduler.Defaults,
            "TCDScheduler" => TcdScheduler.Defaults,
            "DPMSolverSDEScheduler" => DpmSolverSdeScheduler.Defaults,
            DpmSolverPlusPlus2SAncestralScheduler.Name => DpmSolverPlusPlus2SAncestralScheduler.Defaults,
            _ => [],
        };
        return [.. defaults.Select(d => d.Key)];
    }

    /// <summary>A registered name, or one with a schedule-family suffix (e.g. <c>euler-sgm_uniform</c>, <c>heun-karras</c>).</summary>
    private static (Entry Entry, string? Family) FindWithSchedule(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        string trimmed = name.Trim();
        var entries = Volatile.Read(ref _entries);
        var exact = entries.FirstOrDefault(e => string.Equals(e.Name, trimmed, StringComparison.OrdinalIgnoreCase));
        if (exact is not null) return (exact, null);
        foreach (var family in SigmaScheduleFamilies.All)
        {
            foreach (var spelling in new[] { family, family.Replace('_', '-') })
            {
                if (!trimmed.EndsWith("-" + spelling, StringComparison.OrdinalIgnoreCase)) continue;
                string baseName = trimmed[..^(spelling.Length + 1)];
                var entry = entries.FirstOrDefault(e => e.BuiltIn && string.Equals(e.Name, baseName, StringComparison.OrdinalIgnoreCase));
                if (entry is not null) return (entry, family);
            }
        }
        return (Find(trimmed), null);
    }

    /// <summary>
    /// Builds the scheduler the config names in <c>_class_name</c>, as the reference pipeline loads its scheduler;
    /// <paramref name="overrides"/> as for <see cref="Create"/> (including <c>schedule</c>).
    /// </summary>
    /// <exception cref="NotSupportedException">The class is missing or not one the library implements.</exception>
    public static IScheduler FromConfig(JsonConfig config, IReadOnlyDictionary<string, string>? overrides = null)
    {
        string? className = config.String("_class_name", null);
        var entry = Volatile.Read(ref _entries).FirstOrDefault(e => e.ClassName == className)
            ?? throw new NotSupportedException($"Config '{config.Source}': '_class_name' = {(className is null ? "missing" : $"'{className}'")} is not a supported scheduler (supported: {string.Join(", ", ClassNames)}).");
        if (overrides is null || !overrides.ContainsKey(SigmaScheduleFamilies.Key)) return entry.Create(config, overrides);
        return CreateWithSchedule(entry, null, config, new Dictionary<string, string>(overrides), overrides);
    }

    private static Entry Find(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return Volatile.Read(ref _entries).FirstOrDefault(e => string.Equals(e.Name, name.Trim(), StringComparison.OrdinalIgnoreCase))
            ?? throw new ArgumentException($"Unknown scheduler '{name}' (supported: {string.Join(", ", Names)}).", nameof(name));
    }

    private static TcdScheduler CreateTcd(JsonConfig? config, IReadOnlyDictionary<string, string>? overrides)
    {
        // γ ("eta") is a step argument in the reference (default 0.3), not a config key; accept it here like DDIM's.
        double eta = TcdScheduler.DefaultEta;
        if (overrides is not null && overrides.TryGetValue("eta", out var text))
        {
            if (!double.TryParse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out eta) || !(eta >= 0 && eta <= 1))
                throw new ArgumentException($"TCDScheduler override eta={text}: expected a number in [0, 1].", nameof(overrides));
            overrides = overrides.Where(kv => kv.Key != "eta").ToDictionary();
        }
        return new TcdScheduler(config, overrides, eta);
    }

    private static DdimScheduler CreateDdim(JsonConfig? config, IReadOnlyDictionary<string, string>? overrides)
    {
        // η is a step argument in the reference, not a config key; accept it here so the CLI can set it.
        double eta = 0;
        if (overrides is not null && overrides.TryGetValue("eta", out var text))
        {
            if (!double.TryParse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out eta) || eta < 0)
                throw new ArgumentException($"DDIMScheduler override eta={text}: expected a non-negative number.", nameof(overrides));
            overrides = overrides.Where(kv => kv.Key != "eta").ToDictionary();
        }
        return new DdimScheduler(config, overrides, eta);
    }
}

/// <summary>img2img's partial schedule.</summary>
public static class Img2ImgSchedule
{
    /// <summary>
    /// What the reference's <c>StableDiffusionImg2ImgPipeline.get_timesteps</c> does: keeps the last
    /// int(steps·strength) steps (times the scheduler order), sets the run's begin index there and returns the
    /// remaining timesteps and that index. The first returned timestep is where the init latents are noised to.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="strength"/> is outside [0, 1].</exception>
    public static (IReadOnlyList<double> Timesteps, int BeginIndex) ForStrength(ISchedulerRun run, int steps, double strength)
    {
        ArgumentNullException.ThrowIfNull(run);
        if (!(strength >= 0 && strength <= 1)) throw new ArgumentOutOfRangeException(nameof(strength), strength, "strength must be in [0, 1].");
        if (steps < 1) throw new ArgumentOutOfRangeException(nameof(steps), steps, "steps must be at least 1.");
        int init = Math.Min((int)(steps * strength), steps);
        int tStart = Math.Max(steps - init, 0);
        int begin = Math.Min(tStart * run.Order, run.Timesteps.Count);
        run.SetBeginIndex(begin);
        return (run.Timesteps.Skip(begin).ToArray(), begin);
    }
}
