using System.Text.Json;
using LatentDiffusion.Formats;
using LatentDiffusion.Schedulers;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>Each class's defaults are the reference class's <c>__init__</c> defaults, key for key.</summary>
[TestFixture]
public sealed class SchedulerDefaultsTests
{
    /// <summary>
    /// The keyword defaults of each reference class's <c>__init__</c> (diffusers 0.40.0.dev0, commit 58eb52c0), as
    /// Python's json.dumps writes them except that −∞ is quoted (the form a parsed config holds it in), so that this
    /// table does not depend on the reader's handling of bare non-finite numbers (tested on its own).
    /// </summary>
    private const string ReferenceDefaults = """
        {
          "DDIMScheduler": {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear", "trained_betas": null, "clip_sample": true, "set_alpha_to_one": true, "steps_offset": 0, "prediction_type": "epsilon", "thresholding": false, "dynamic_thresholding_ratio": 0.995, "clip_sample_range": 1.0, "sample_max_value": 1.0, "timestep_spacing": "leading", "rescale_betas_zero_snr": false},
          "DDPMScheduler": {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear", "trained_betas": null, "variance_type": "fixed_small", "clip_sample": true, "prediction_type": "epsilon", "thresholding": false, "dynamic_thresholding_ratio": 0.995, "clip_sample_range": 1.0, "sample_max_value": 1.0, "timestep_spacing": "leading", "steps_offset": 0, "rescale_betas_zero_snr": false},
          "PNDMScheduler": {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear", "trained_betas": null, "skip_prk_steps": false, "set_alpha_to_one": false, "prediction_type": "epsilon", "timestep_spacing": "leading", "steps_offset": 0},
          "LMSDiscreteScheduler": {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear", "trained_betas": null, "use_karras_sigmas": false, "use_exponential_sigmas": false, "use_beta_sigmas": false, "prediction_type": "epsilon", "timestep_spacing": "linspace", "steps_offset": 0},
          "EulerDiscreteScheduler": {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear", "trained_betas": null, "prediction_type": "epsilon", "interpolation_type": "linear", "use_karras_sigmas": false, "use_exponential_sigmas": false, "use_beta_sigmas": false, "sigma_min": null, "sigma_max": null, "timestep_spacing": "linspace", "timestep_type": "discrete", "steps_offset": 0, "rescale_betas_zero_snr": false, "final_sigmas_type": "zero"},
          "EulerAncestralDiscreteScheduler": {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear", "trained_betas": null, "prediction_type": "epsilon", "timestep_spacing": "linspace", "steps_offset": 0, "rescale_betas_zero_snr": false},
          "HeunDiscreteScheduler": {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "linear", "trained_betas": null, "prediction_type": "epsilon", "use_karras_sigmas": false, "use_exponential_sigmas": false, "use_beta_sigmas": false, "clip_sample": false, "clip_sample_range": 1.0, "timestep_spacing": "linspace", "steps_offset": 0},
          "DPMSolverMultistepScheduler": {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear", "trained_betas": null, "solver_order": 2, "prediction_type": "epsilon", "thresholding": false, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "algorithm_type": "dpmsolver++", "solver_type": "midpoint", "lower_order_final": true, "euler_at_final": false, "use_karras_sigmas": false, "use_exponential_sigmas": false, "use_beta_sigmas": false, "use_lu_lambdas": false, "use_flow_sigmas": false, "flow_shift": 1.0, "final_sigmas_type": "zero", "lambda_min_clipped": "-Infinity", "variance_type": null, "timestep_spacing": "linspace", "steps_offset": 0, "rescale_betas_zero_snr": false, "use_dynamic_shifting": false, "time_shift_type": "exponential"},
          "DPMSolverSinglestepScheduler": {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear", "trained_betas": null, "solver_order": 2, "prediction_type": "epsilon", "thresholding": false, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "algorithm_type": "dpmsolver++", "solver_type": "midpoint", "lower_order_final": false, "use_karras_sigmas": false, "use_exponential_sigmas": false, "use_beta_sigmas": false, "use_flow_sigmas": false, "flow_shift": 1.0, "final_sigmas_type": "zero", "lambda_min_clipped": "-Infinity", "variance_type": null, "use_dynamic_shifting": false, "time_shift_type": "exponential"},
          "KDPM2DiscreteScheduler": {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "linear", "trained_betas": null, "use_karras_sigmas": false, "use_exponential_sigmas": false, "use_beta_sigmas": false, "prediction_type": "epsilon", "timestep_spacing": "linspace", "steps_offset": 0},
          "KDPM2AncestralDiscreteScheduler": {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "linear", "trained_betas": null, "use_karras_sigmas": false, "use_exponential_sigmas": false, "use_beta_sigmas": false, "prediction_type": "epsilon", "timestep_spacing": "linspace", "steps_offset": 0},
          "UniPCMultistepScheduler": {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear", "trained_betas": null, "solver_order": 2, "prediction_type": "epsilon", "thresholding": false, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "predict_x0": true, "solver_type": "bh2", "lower_order_final": true, "disable_corrector": [], "solver_p": null, "use_karras_sigmas": false, "use_exponential_sigmas": false, "use_beta_sigmas": false, "use_flow_sigmas": false, "flow_shift": 1.0, "timestep_spacing": "linspace", "steps_offset": 0, "final_sigmas_type": "zero", "rescale_betas_zero_snr": false, "use_dynamic_shifting": false, "time_shift_type": "exponential", "sigma_min": null, "sigma_max": null, "shift_terminal": null},
          "DEISMultistepScheduler": {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear", "trained_betas": null, "solver_order": 2, "prediction_type": "epsilon", "thresholding": false, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "algorithm_type": "deis", "solver_type": "logrho", "lower_order_final": true, "use_karras_sigmas": false, "use_exponential_sigmas": false, "use_beta_sigmas": false, "use_flow_sigmas": false, "flow_shift": 1.0, "timestep_spacing": "linspace", "steps_offset": 0, "use_dynamic_shifting": false, "time_shift_type": "exponential"},
          "LCMScheduler": {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "trained_betas": null, "original_inference_steps": 50, "clip_sample": false, "clip_sample_range": 1.0, "set_alpha_to_one": true, "steps_offset": 0, "prediction_type": "epsilon", "thresholding": false, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "timestep_spacing": "leading", "timestep_scaling": 10.0, "rescale_betas_zero_snr": false},
          "TCDScheduler": {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "trained_betas": null, "original_inference_steps": 50, "clip_sample": false, "clip_sample_range": 1.0, "set_alpha_to_one": true, "steps_offset": 0, "prediction_type": "epsilon", "thresholding": false, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "timestep_spacing": "leading", "timestep_scaling": 10.0, "rescale_betas_zero_snr": false},
          "DPMSolverSDEScheduler": {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "linear", "trained_betas": null, "prediction_type": "epsilon", "use_karras_sigmas": false, "use_exponential_sigmas": false, "use_beta_sigmas": false, "noise_sampler_seed": null, "timestep_spacing": "linspace", "steps_offset": 0},
          "EDMEulerScheduler": {"sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5, "sigma_schedule": "karras", "num_train_timesteps": 1000, "prediction_type": "epsilon", "rho": 7.0, "final_sigmas_type": "zero"},
          "EDMDPMSolverMultistepScheduler": {"sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5, "sigma_schedule": "karras", "num_train_timesteps": 1000, "prediction_type": "epsilon", "rho": 7.0, "solver_order": 2, "thresholding": false, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "algorithm_type": "dpmsolver++", "solver_type": "midpoint", "lower_order_final": true, "euler_at_final": false, "final_sigmas_type": "zero"}
        }
        """;

    private static JsonElement Defaults(string className) => JsonConfig.Parse(ReferenceDefaults, "reference defaults").Root.GetProperty(className);

    /// <summary>
    /// Every registered class except <see cref="DpmSolverPlusPlus2SAncestralScheduler"/>: the reference library has no
    /// class for k-diffusion's DPM++ 2S ancestral sampler, so there is no <c>__init__</c> to compare with (its defaults
    /// are checked against Euler ancestral's below).
    /// </summary>
    public static IEnumerable<string> ClassNames() => SchedulerRegistry.ClassNames.Where(c => c != DpmSolverPlusPlus2SAncestralScheduler.Name);

    /// <summary>The only registered class without a reference <c>__init__</c> is DPM++ 2S ancestral; a new one must be added to the table.</summary>
    [Test]
    public void OnlyDpmPlusPlus2SAncestralLacksAReferenceClass()
    {
        var table = JsonConfig.Parse(ReferenceDefaults, "reference defaults").Root.EnumerateObject().Select(p => p.Name).ToHashSet();
        Assert.That(SchedulerRegistry.ClassNames.Where(c => !table.Contains(c)), Is.EqualTo(new[] { DpmSolverPlusPlus2SAncestralScheduler.Name }));
    }

    /// <summary>
    /// DPM++ 2S ancestral (no reference class) takes the schedule options of the reference's Euler ancestral sampler, the
    /// other k-diffusion ancestral sampler: Euler ancestral's <c>__init__</c> keys at its defaults, plus the three
    /// <c>use_*_sigmas</c> spacings, off by default as in every reference sigma scheduler that has them.
    /// </summary>
    [Test]
    public void DpmPlusPlus2SAncestralDefaultsToEulerAncestralsReferenceInit()
    {
        var expected = Defaults("EulerAncestralDiscreteScheduler").EnumerateObject().ToDictionary(p => p.Name, p => Normalise(p.Value));
        foreach (var spacing in new[] { "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas" }) expected[spacing] = "false";
        string className = DpmSolverPlusPlus2SAncestralScheduler.Name;
        var scheduler = SchedulerRegistry.FromConfig(JsonConfig.Parse($$"""{"_class_name": "{{className}}"}""", "class name only"));
        var mine = scheduler.Config.Root.EnumerateObject().Where(p => !p.Name.StartsWith('_')).ToDictionary(p => p.Name, p => Normalise(p.Value));
        Assert.That(mine, Is.EquivalentTo(expected));
    }

    /// <summary>X.from_config({"_class_name": X}) has exactly the reference's keys, each at the reference's default.</summary>
    [TestCaseSource(nameof(ClassNames))]
    public void EveryKeyDefaultsToTheReferenceInit(string className)
    {
        var expected = Defaults(className);
        var scheduler = SchedulerRegistry.FromConfig(JsonConfig.Parse($$"""{"_class_name": "{{className}}"}""", "class name only"));
        var mine = scheduler.Config.Root.EnumerateObject().Where(p => !p.Name.StartsWith('_')).ToDictionary(p => p.Name, p => p.Value);
        Assert.That(mine.Keys.Order(), Is.EqualTo(expected.EnumerateObject().Select(p => p.Name).Order()), "keys");
        foreach (var p in expected.EnumerateObject())
            Assert.That(Normalise(mine[p.Name]), Is.EqualTo(Normalise(p.Value)), $"{className}.{p.Name}");
    }

    private static string Normalise(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Number => e.GetDouble().ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        JsonValueKind.String => e.GetString()!,
        _ => e.GetRawText(),
    };

    /// <summary>
    /// Heun, KDPM2 and KDPM2 ancestral default to β from 0.00085 to 0.012 (linear, as their <c>__init__</c> says), not
    /// the 0.0001 to 0.02 of the other classes: with no config at all, the largest sigma is the one of that schedule.
    /// </summary>
    [TestCase("heun")]
    [TestCase("kdpm2")]
    [TestCase("kdpm2-a")]
    public void KDiffusionSecondOrderSchedulersDefaultToTheStableDiffusionBetaRange(string name)
    {
        var scheduler = SchedulerRegistry.Create(name, null);
        Assert.That(scheduler.Config.Double("beta_start", 0), Is.EqualTo(0.00085));
        Assert.That(scheduler.Config.Double("beta_end", 0), Is.EqualTo(0.012));
        Assert.That(scheduler.Config.String("beta_schedule", null), Is.EqualTo("linear"));
        // σ_999 of betas linspace(0.00085, 0.012, 1000), in double: about 14.6 (the 0.0001 to 0.02 range gives about 157).
        double alphaBar = 1;
        for (int i = 0; i < 1000; i++) alphaBar *= 1 - (0.00085 + i * (0.012 - 0.00085) / 999);
        double sigmaMax = Math.Sqrt((1 - alphaBar) / alphaBar);
        using var run = scheduler.Start(10);
        Assert.That(run.Sigmas![0], Is.EqualTo(sigmaMax).Within(1e-5 * sigmaMax), "largest sigma");
        Assert.That(run.InitNoiseSigma, Is.EqualTo(sigmaMax).Within(1e-5 * sigmaMax), "init noise sigma");
    }

    /// <summary>
    /// DPM-Solver++ singlestep defaults lower_order_final to false. With a non-zero final sigma (final_sigmas_type
    /// "sigma_min") and a step count the order divides, the reference runs the full order to the end: orders 1, 2, 1, 2, …
    /// and no first-order tail. DPM++ 2S swapped into SD 1.5's config must do the same.
    /// </summary>
    [Test]
    public void DpmSolverSinglestepDefaultsLowerOrderFinalToFalse()
    {
        var config = SchedulerTestKit.ModelConfig("sd15");
        var overrides = new Dictionary<string, string> { ["final_sigmas_type"] = "sigma_min" };
        var scheduler = (DpmSolverSinglestepScheduler)SchedulerRegistry.Create("dpm++2s", config, overrides);
        Assert.That(scheduler.Config.Bool("lower_order_final", true), Is.False);
        Assert.That(scheduler.OrderList(10, zeroFinal: false), Is.EqualTo(new[] { 1, 2, 1, 2, 1, 2, 1, 2, 1, 2 }));
        // Odd step counts and a zero final sigma still force the first-order ending, as in the reference's set_timesteps.
        Assert.That(scheduler.OrderList(9, zeroFinal: false), Is.EqualTo(new[] { 1, 2, 1, 2, 1, 2, 1, 2, 1 }));
        Assert.That(scheduler.OrderList(10, zeroFinal: true), Is.EqualTo(new[] { 1, 2, 1, 2, 1, 2, 1, 2, 1, 1 }));

        Tensor Run(IReadOnlyDictionary<string, string> o)
        {
            using var run = SchedulerRegistry.Create("dpm++2s", config, o).Start(10);
            using var start = SchedulerTestKit.Latents([1, 4, 6, 10], 3) * run.InitNoiseSigma;
            return SchedulerTestKit.Denoise(run, start, run.Timesteps).Result;
        }
        using var byDefault = Run(overrides);
        using var explicitFalse = Run(new Dictionary<string, string>(overrides) { ["lower_order_final"] = "false" });
        using var explicitTrue = Run(new Dictionary<string, string>(overrides) { ["lower_order_final"] = "true" });
        AssertTensor.MaxAbsClose(byDefault, explicitFalse, 0, "default = lower_order_final false");
        Assert.That((byDefault - explicitTrue).abs().max().item<float>(), Is.GreaterThan(1e-4f), "lower_order_final true must differ");
    }
}
