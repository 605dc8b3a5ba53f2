namespace LatentDiffusion.Schedulers;

/// <summary>
/// The config keys the built-in schedulers share (noise schedule, timestep spacing, prediction type, clipping and
/// thresholding, sigma spacings), typed and checked, read once when a scheduler is built. A key the class declares has
/// the effective config's value (the class's key table holds its default); a key the class does not declare does not
/// affect it, as in the reference, and reads as <see cref="Absent"/> says (off, or the DDPM noise schedule).
/// </summary>
internal sealed record NoiseScheduleConfig
{
    /// <summary>
    /// What a key reads as in a class that does not declare it: the beta keys take the reference's DDPM defaults
    /// (<see cref="DiffusionScheduler.BetaKeys"/>), everything else is off.
    /// </summary>
    private static readonly Dictionary<string, object?> Absent = new(DiffusionScheduler.BetaKeys.Select(k => KeyValuePair.Create(k.Key, k.Default)))
    {
        // Off: none of these changes anything when absent (the thresholding and clipping values are unused while off).
        ["prediction_type"] = "epsilon", ["rescale_betas_zero_snr"] = false, ["steps_offset"] = 0, ["thresholding"] = false,
        ["dynamic_thresholding_ratio"] = 0.995, ["sample_max_value"] = 1.0, ["clip_sample"] = false, ["clip_sample_range"] = 1.0,
        ["use_karras_sigmas"] = false, ["use_exponential_sigmas"] = false, ["use_beta_sigmas"] = false, ["final_sigmas_type"] = "zero",
    };

    /// <summary>Where the config came from, for messages.</summary>
    public required string Source { get; init; }

    /// <summary><c>num_train_timesteps</c>: 2 to <see cref="Formats.ModelLimits.MaxTrainTimesteps"/>.</summary>
    public required int NumTrainTimesteps { get; init; }

    /// <summary><c>beta_start</c>.</summary>
    public required double BetaStart { get; init; }

    /// <summary><c>beta_end</c>.</summary>
    public required double BetaEnd { get; init; }

    /// <summary><c>beta_schedule</c>: one of <see cref="NoiseSchedule.BetaSchedules"/> (not checked when <see cref="TrainedBetas"/> replace it).</summary>
    public required string BetaSchedule { get; init; }

    /// <summary><c>trained_betas</c>: explicit betas, or null.</summary>
    public required double[]? TrainedBetas { get; init; }

    /// <summary><c>rescale_betas_zero_snr</c>.</summary>
    public required bool RescaleBetasZeroSnr { get; init; }

    /// <summary><c>prediction_type</c>: one the class supports.</summary>
    public required string PredictionType { get; init; }

    /// <summary><c>timestep_spacing</c>: linspace, leading or trailing; null for a class without the key.</summary>
    public required string? TimestepSpacing { get; init; }

    /// <summary><c>steps_offset</c>: 0 or more.</summary>
    public required int StepsOffset { get; init; }

    /// <summary><c>thresholding</c> (dynamic thresholding of x̂₀).</summary>
    public required bool Thresholding { get; init; }

    /// <summary><c>dynamic_thresholding_ratio</c>: in [0, 1].</summary>
    public required double DynamicThresholdingRatio { get; init; }

    /// <summary><c>sample_max_value</c>: 0 or more.</summary>
    public required double SampleMaxValue { get; init; }

    /// <summary><c>clip_sample</c>.</summary>
    public required bool ClipSample { get; init; }

    /// <summary><c>clip_sample_range</c>: 0 or more.</summary>
    public required double ClipSampleRange { get; init; }

    /// <summary><c>use_karras_sigmas</c>.</summary>
    public required bool UseKarrasSigmas { get; init; }

    /// <summary><c>use_exponential_sigmas</c>.</summary>
    public required bool UseExponentialSigmas { get; init; }

    /// <summary><c>use_beta_sigmas</c>.</summary>
    public required bool UseBetaSigmas { get; init; }

    /// <summary><c>sigma_min</c>: null (the model's own) or a finite number, 0 or more.</summary>
    public required double? SigmaMin { get; init; }

    /// <summary><c>sigma_max</c>: null (the model's own) or a finite number, 0 or more.</summary>
    public required double? SigmaMax { get; init; }

    /// <summary><c>final_sigmas_type</c>: zero or sigma_min.</summary>
    public required string FinalSigmasType { get; init; }

    /// <summary>
    /// The extension key <c>schedule</c> (a schedule family of popular UIs, <see cref="SigmaScheduleFamilies"/>) as
    /// written, or null; the sigma samplers check and apply it (<see cref="SigmaSchedule.Validate"/>).
    /// </summary>
    public required string? ScheduleFamily { get; init; }

    /// <summary>Whether Karras, exponential or beta sigmas are asked for.</summary>
    public bool AlternativeSpacing => UseKarrasSigmas || UseExponentialSigmas || UseBetaSigmas;

    /// <summary>Reads and checks the shared keys.</summary>
    /// <exception cref="InvalidDataException">A value of the wrong type or outside its range.</exception>
    /// <exception cref="NotSupportedException">A value the library does not implement.</exception>
    public static NoiseScheduleConfig Read(SchedulerConfigReader r, IReadOnlyList<string> predictionTypes)
    {
        T Or<T>(string key, Func<string, T> read) => r.Declares(key) ? read(key) : (T)Absent[key]!;
        var trained = r.Declares("trained_betas") ? r.DoubleArray("trained_betas") : null;
        bool fromBetaKeys = trained is null;
        var config = new NoiseScheduleConfig
        {
            Source = r.Source,
            NumTrainTimesteps = Or("num_train_timesteps", NumTrainTimestepsOf(r)),
            TrainedBetas = trained,
            BetaStart = Or("beta_start", k => fromBetaKeys ? r.Double(k, 0, 1) : r.Config.Double(k, 0)),
            BetaEnd = Or("beta_end", k => fromBetaKeys ? r.Double(k, 0, 1) : r.Config.Double(k, 0)),
            BetaSchedule = Or("beta_schedule", k => fromBetaKeys ? r.Choice(k, NoiseSchedule.BetaSchedules)! : r.Config.String(k, "")!),
            RescaleBetasZeroSnr = Or("rescale_betas_zero_snr", r.Bool),
            PredictionType = Or("prediction_type", k => r.Choice(k, [.. predictionTypes]) ?? throw Null(r, k)),
            TimestepSpacing = r.Declares("timestep_spacing") ? r.Choice("timestep_spacing", NoiseSchedule.Spacings) ?? throw Null(r, "timestep_spacing") : null,
            StepsOffset = Or("steps_offset", k => r.Int(k, min: 0)),
            Thresholding = Or("thresholding", r.Bool),
            DynamicThresholdingRatio = Or("dynamic_thresholding_ratio", k => r.Double(k, 0, 1)),
            SampleMaxValue = Or("sample_max_value", k => r.Double(k, min: 0)),
            ClipSample = Or("clip_sample", r.Bool),
            ClipSampleRange = Or("clip_sample_range", k => r.Double(k, min: 0)),
            UseKarrasSigmas = Or("use_karras_sigmas", r.Bool),
            UseExponentialSigmas = Or("use_exponential_sigmas", r.Bool),
            UseBetaSigmas = Or("use_beta_sigmas", r.Bool),
            SigmaMin = r.Declares("sigma_min") ? r.NullableDouble("sigma_min", min: 0) : null,
            SigmaMax = r.Declares("sigma_max") ? r.NullableDouble("sigma_max", min: 0) : null,
            FinalSigmasType = Or("final_sigmas_type", k => r.Choice(k, "zero", "sigma_min") ?? throw Null(r, k)),
            ScheduleFamily = r.Config.String(SigmaScheduleFamilies.Key, null),
        };
        // As the reference: at most one alternative sigma spacing.
        if ((config.UseKarrasSigmas ? 1 : 0) + (config.UseExponentialSigmas ? 1 : 0) + (config.UseBetaSigmas ? 1 : 0) > 1)
            throw new NotSupportedException($"Config '{r.Source}': only one of use_karras_sigmas, use_exponential_sigmas and use_beta_sigmas can be true.");
        return config;
    }

    private static Func<string, int> NumTrainTimestepsOf(SchedulerConfigReader r) => key =>
    {
        int n = r.Config.Int(key, 0);
        if (n < 2 || n > Formats.ModelLimits.MaxTrainTimesteps)
            throw new InvalidDataException($"Config '{r.Source}': 'num_train_timesteps' = {n}, expected 2 to {Formats.ModelLimits.MaxTrainTimesteps:N0} (Stable Diffusion: 1000).");
        return n;
    };

    private static NotSupportedException Null(SchedulerConfigReader r, string key)
        => new($"Config '{r.Source}': '{key}' = null is not supported.");
}
