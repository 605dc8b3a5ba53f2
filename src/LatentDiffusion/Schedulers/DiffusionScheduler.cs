using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using LatentDiffusion.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// Base of every scheduler, built-in or a user's: the effective config (the reference's <c>from_config</c> merge of the
/// class's keys and defaults, the model's config and overrides), the noise schedule (ᾱ) and forward diffusion.
/// Immutable and thread-safe; <see cref="Start"/> hands out independent runs, which a derived class builds in
/// <see cref="CreateRun"/> (usually deriving them from <see cref="AlphaScheduleRun"/> or <see cref="SigmaScheduleRun"/>).
/// A user's scheduler joins <see cref="SchedulerRegistry"/> with <see cref="SchedulerRegistry.Register"/>.
/// </summary>
public abstract class DiffusionScheduler : IScheduler
{
    /// <summary>The keys every DDPM-style scheduler shares, with the reference's defaults.</summary>
    internal static readonly (string Key, object? Default)[] BetaKeys =
    [
        ("num_train_timesteps", 1000), ("beta_start", 0.0001), ("beta_end", 0.02), ("beta_schedule", "linear"), ("trained_betas", null),
    ];

    /// <summary>
    /// The beta keys of the reference's Heun, KDPM2 and KDPM2 ancestral classes, whose defaults are Stable Diffusion's
    /// beta range (0.00085 to 0.012) but a <c>linear</c> schedule, exactly as their <c>__init__</c> declares them.
    /// </summary>
    internal static readonly (string Key, object? Default)[] StableDiffusionRangeBetaKeys =
    [
        ("num_train_timesteps", 1000), ("beta_start", 0.00085), ("beta_end", 0.012), ("beta_schedule", "linear"), ("trained_betas", null),
    ];

    /// <summary>
    /// The keys of the noise schedule with the reference's DDPM defaults (<c>num_train_timesteps</c> 1000,
    /// <c>beta_start</c> 0.0001, <c>beta_end</c> 0.02, <c>beta_schedule</c> "linear", <c>trained_betas</c> null), to
    /// start a derived class's key list: <c>[.. BetaScheduleKeys, ("prediction_type", "epsilon"), ("my_key", 1.0)]</c>.
    /// </summary>
    protected static IReadOnlyList<(string Key, object? Default)> BetaScheduleKeys { get; } = Array.AsReadOnly(BetaKeys);

    /// <summary>
    /// Builds the effective config and the noise schedule, as the reference's <c>X.from_config(config, **overrides)</c>:
    /// the class's <paramref name="configKeys"/> with their defaults, replaced by the keys of <paramref name="config"/>
    /// that the class knows, replaced by <paramref name="overrides"/> (which must name keys of the class; values as
    /// text, parsed like the key's default). Keys of <paramref name="config"/> the class does not know are carried in
    /// <see cref="Config"/> unused. The schedule reads <c>num_train_timesteps</c>, the beta keys
    /// (<see cref="BetaScheduleKeys"/>), <c>rescale_betas_zero_snr</c> and <c>prediction_type</c> where the class declares
    /// them; a class without them gets the DDPM defaults and <c>epsilon</c>. Every value is checked here, once: against
    /// the type of its key's default, and keys named as the built-in schedulers name theirs (<c>timestep_spacing</c>,
    /// <c>steps_offset</c>, <c>clip_sample_range</c>, …) as the built-in schedulers check them.
    /// </summary>
    /// <param name="className">The class name written as <c>_class_name</c> (what <see cref="SchedulerRegistry.FromConfig"/> looks up).</param>
    /// <param name="configKeys">Every config key of the class with its default: null, a bool, int, double, string or int[]
    /// (the type also says how an override's text is parsed; null or a list: as JSON).</param>
    /// <param name="config">The model's <c>scheduler_config.json</c>, or null for the defaults.</param>
    /// <param name="overrides">Config keys to replace, values as text (e.g. <c>timestep_spacing=trailing</c>).</param>
    /// <exception cref="ArgumentException">An empty class name, a duplicate key or an unsupported default; an override
    /// that names a key the class does not have or whose text does not parse.</exception>
    /// <exception cref="InvalidDataException">A config value of the wrong type or outside its range.</exception>
    /// <exception cref="NotSupportedException">A config value the library does not implement (e.g. an unknown <c>beta_schedule</c>).</exception>
    protected DiffusionScheduler(string className, IReadOnlyList<(string Key, object? Default)> configKeys, JsonConfig? config, IReadOnlyDictionary<string, string>? overrides)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(className);
        ArgumentNullException.ThrowIfNull(configKeys);
        // Every public way to a scheduler (the registry, each class's constructor) comes through here, and the schedule
        // below is computed with libtorch: load it the library's way first, as the pipeline loaders do. A scheduler used on
        // its own, before anything else touched TorchSharp, would otherwise meet TorchSharp's own loader, which fails on
        // systems whose libstdc++ is older than its glue library asks for (Debian 12).
        TorchRuntime.EnsureInitialized();
        ClassName = className;
        Config = SchedulerConfig.Build(className, configKeys, config, overrides, AdjustConfig);
        // Read once: from here on the class reads typed values, never the JSON.
        ConfigReader = new SchedulerConfigReader(Config, configKeys.Select(k => k.Key));
        ConfigReader.CheckTypes(configKeys);
        Schedule = NoiseScheduleConfig.Read(ConfigReader, SupportedPredictionTypes);
        NumTrainTimesteps = Schedule.NumTrainTimesteps;
        PredictionType = Schedule.PredictionType;
        AlphasCumprod = NoiseSchedule.AlphasCumprodFromConfig(Schedule, ZeroSnrPatchesLast);
        CumulativeAlphas = Array.AsReadOnly(AlphasCumprod);
    }

    /// <summary>
    /// Whether a zero-terminal-SNR schedule's last ᾱ (0) is nudged to 2^-24, as the reference's sigma-based classes do
    /// (an infinite sigma is unusable). Read by the constructor: return a constant.
    /// </summary>
    private protected virtual bool ZeroSnrPatchesLast => false;

    /// <summary>
    /// Rewrites the merged config before it is read, as some reference classes' <c>register_to_config</c> does (e.g.
    /// DEIS maps a carried DPM-Solver <c>algorithm_type</c> to its own). Called by the constructor: use no instance state.
    /// </summary>
    private protected virtual void AdjustConfig(System.Text.Json.Nodes.JsonObject config)
    {
    }

    /// <summary>Reads the class's own keys (typed, checked) in a derived constructor.</summary>
    private protected SchedulerConfigReader ConfigReader { get; }

    /// <summary>The shared keys, typed and checked, read once at construction.</summary>
    internal NoiseScheduleConfig Schedule { get; }

    /// <inheritdoc/>
    public string ClassName { get; }

    /// <inheritdoc/>
    public JsonConfig Config { get; }

    /// <inheritdoc/>
    public int NumTrainTimesteps { get; }

    /// <summary>What the denoiser predicts: <c>epsilon</c>, <c>v_prediction</c> or <c>sample</c>.</summary>
    public string PredictionType { get; }

    /// <summary>The prediction types this class implements.</summary>
    internal virtual string[] SupportedPredictionTypes => ["epsilon", "v_prediction", "sample"];

    /// <summary>ᾱ_t (alphas_cumprod), float32 as in the reference.</summary>
    internal float[] AlphasCumprod { get; }

    /// <summary>ᾱ_t (the reference's <c>alphas_cumprod</c>) for t = 0 … <see cref="NumTrainTimesteps"/>−1, float32 as in the reference.</summary>
    protected IReadOnlyList<float> CumulativeAlphas { get; }

    /// <inheritdoc/>
    public ISchedulerRun Start(int inferenceSteps, torch.Generator? generator = null)
    {
        if (inferenceSteps < 1 || inferenceSteps > NumTrainTimesteps)
            throw new ArgumentOutOfRangeException(nameof(inferenceSteps), inferenceSteps, $"{ClassName}: inference steps must be between 1 and num_train_timesteps = {NumTrainTimesteps}.");
        var run = CreateRun(inferenceSteps, generator);
        // "leading" spacing plus steps_offset can push the first timestep past the last trained one (e.g. 1000 steps).
        if (!ContinuousTimesteps && run.Timesteps.Any(t => t < 0 || t > NumTrainTimesteps - 1))
        {
            run.Dispose();
            throw new ArgumentOutOfRangeException(nameof(inferenceSteps), inferenceSteps,
                $"{ClassName}: {inferenceSteps} steps with timestep_spacing '{Schedule.TimestepSpacing}' and steps_offset {Schedule.StepsOffset} reach timesteps outside [0, {NumTrainTimesteps - 1}].");
        }
        return run;
    }

    /// <summary>Whether the run's timesteps are a continuous noise conditioning (e.g. ¼·ln σ) rather than training timesteps.</summary>
    internal virtual bool ContinuousTimesteps => false;

    /// <summary>
    /// Builds one generation's run of <paramref name="inferenceSteps"/> steps (the reference's <c>set_timesteps</c>):
    /// its timesteps, sigmas and per-run state. <see cref="Start"/> has checked the step count and checks the run's
    /// timesteps lie within the training timesteps.
    /// </summary>
    /// <param name="inferenceSteps">The number of denoising steps, 1 to <see cref="NumTrainTimesteps"/>.</param>
    /// <param name="generator">The CPU generator a stochastic run draws its noise from; null for libtorch's global one.</param>
    protected abstract ISchedulerRun CreateRun(int inferenceSteps, torch.Generator? generator);

    /// <inheritdoc/>
    public Tensor GetVelocity(Tensor sample, Tensor noise, Tensor timesteps)
        => ForwardDiffusion.GetVelocity(AlphasCumprod, sample, noise, timesteps);

    /// <summary>Forward diffusion at integer training timesteps (one per batch item): sqrt(ᾱ_t)·x₀ + sqrt(1−ᾱ_t)·noise.</summary>
    public Tensor AddNoise(Tensor original, Tensor noise, Tensor timesteps)
        => ForwardDiffusion.AddNoise(AlphasCumprod, original, noise, timesteps);
}

/// <summary>The variance-preserving forward process q(x_t | x_0) on ᾱ, shared by all schedulers.</summary>
public static class ForwardDiffusion
{
    /// <summary>sqrt(ᾱ_t)·original + sqrt(1−ᾱ_t)·noise, t an integer training timestep per batch item (a 0-dim tensor applies to all).</summary>
    public static Tensor AddNoise(IReadOnlyList<float> alphasCumprod, Tensor original, Tensor noise, Tensor timesteps)
    {
        using var scope = torch.NewDisposeScope();
        var (a, b) = Coefficients(alphasCumprod, original, timesteps);
        return (a * original + b * noise).MoveToOuterDisposeScope();
    }

    /// <summary>The v-prediction target sqrt(ᾱ_t)·noise − sqrt(1−ᾱ_t)·sample (Salimans &amp; Ho 2022).</summary>
    public static Tensor GetVelocity(IReadOnlyList<float> alphasCumprod, Tensor sample, Tensor noise, Tensor timesteps)
    {
        using var scope = torch.NewDisposeScope();
        var (a, b) = Coefficients(alphasCumprod, sample, timesteps);
        return (a * noise - b * sample).MoveToOuterDisposeScope();
    }

    private static (Tensor, Tensor) Coefficients(IReadOnlyList<float> alphasCumprod, Tensor like, Tensor timesteps)
    {
        var ts = timesteps.to(ScalarType.Int64, CPU).flatten().data<long>().ToArray();
        var sqrtA = new float[ts.Length];
        var sqrtB = new float[ts.Length];
        for (int i = 0; i < ts.Length; i++)
        {
            if (ts[i] < 0 || ts[i] >= alphasCumprod.Count)
                throw new ArgumentOutOfRangeException(nameof(timesteps), ts[i], $"Timesteps must be in [0, {alphasCumprod.Count - 1}].");
            float ac = alphasCumprod[(int)ts[i]];
            sqrtA[i] = MathF.Sqrt(ac);
            sqrtB[i] = MathF.Sqrt(1f - ac);
        }
        var a = NoiseSchedule.Broadcast(torch.tensor(sqrtA).to(like.dtype, like.device), like);
        var b = NoiseSchedule.Broadcast(torch.tensor(sqrtB).to(like.dtype, like.device), like);
        return (a, b);
    }
}
