using System.Text.Json;
using LatentDiffusion.Formats;
using LatentDiffusion.Schedulers;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>
/// Every config key of every class, set to values the reference accepts other than its default: the scheduler either
/// runs (a finite result on a non-square batch of 2) or refuses the value with a <see cref="NotSupportedException"/>
/// that names the key. Nothing else: no libtorch error, no index error, no silent non-finite output.
/// </summary>
[TestFixture]
public sealed class SchedulerConfigKeyTests
{
    private static readonly string Linspace1000 = "[" + string.Join(", ", Enumerable.Range(0, 1000).Select(i => (0.0001 + i * (0.02 - 0.0001) / 999).ToString("R", System.Globalization.CultureInfo.InvariantCulture))) + "]";

    /// <summary>Values the reference accepts for each key (its documented choices), as override text.</summary>
    private static IEnumerable<string> Alternatives(string key, JsonElement defaultValue)
    {
        switch (key)
        {
            case "beta_schedule": return ["scaled_linear", "squaredcos_cap_v2", "linear"];
            case "prediction_type": return ["v_prediction", "sample"];
            case "timestep_spacing": return ["linspace", "leading", "trailing"];
            case "variance_type": return ["fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"];
            case "algorithm_type": return ["dpmsolver++", "sde-dpmsolver++", "dpmsolver", "sde-dpmsolver", "deis"];
            case "solver_type": return ["midpoint", "heun", "logrho", "bh1", "bh2"];
            case "final_sigmas_type": return ["zero", "sigma_min"];
            case "interpolation_type": return ["linear", "log_linear"];
            case "timestep_type": return ["discrete", "continuous"];
            case "time_shift_type": return ["exponential", "linear"];
            case "num_train_timesteps": return ["500", "2000"];
            case "steps_offset": return ["1", "2"];
            case "solver_order": return ["1", "3"];
            case "original_inference_steps": return ["25", "100"];
            case "beta_start": return ["0.0002"];
            case "beta_end": return ["0.015"];
            case "dynamic_thresholding_ratio": return ["0.9"];
            case "sample_max_value": return ["2.0", "0.5"];
            case "clip_sample_range": return ["0.5", "2.0"];
            case "flow_shift": return ["3.0"];
            case "lambda_min_clipped": return ["-5.1"];
            case "timestep_scaling": return ["5.0"];
            case "sigma_min": return ["0.1"];
            case "sigma_max": return ["10.0"];
            case "shift_terminal": return ["0.5"];
            case "trained_betas": return [Linspace1000];
            case "disable_corrector": return ["[0]", "[0, 1]"];
            case "solver_p": return ["{}"];
            // EDM (scheduling_edm_*.py): the two documented schedules; sigma_data 1.0 as in stabilityai/cosxl's
            // EDMEulerScheduler config (the docstring's 0.5 is the EDM paper's); rho other than the paper's 7.
            case "sigma_schedule": return ["karras", "exponential"];
            case "sigma_data": return ["1.0"];
            case "rho": return ["3.0", "10.0"];
            // DPMSolverSDEScheduler: an int seed for the Brownian noise sampler (default None: from the run's generator).
            case "noise_sampler_seed": return ["0", "42"];
        }
        return defaultValue.ValueKind switch
        {
            JsonValueKind.True => ["false"],
            JsonValueKind.False => ["true"],
            _ => throw new AssertionException($"No alternative values listed for key '{key}' ({defaultValue.GetRawText()}): add them to this test."),
        };
    }

    /// <summary>
    /// Settings whose 3-step toy run is non-finite in the reference as well, by the same float32 arithmetic:
    /// ε-prediction at zero terminal SNR divides by √ᾱ₉₉₉ = 0 where a schedule reaches t = 999 without the sigma
    /// schedulers' 2^-24 patch; UniPC with predict_x0 false multiplies σ_t = 0 by expm1(h) = ∞ at the final zero sigma;
    /// UniPC without lower_order_final takes its last step to σ = 0 at second order, where h = ∞ makes
    /// r_k = Δλ/h = 0 and D1 = (m1 − m0)/r_k infinite; KDPM2 ancestral on the cosine schedule (σ_max ≈ 3·10⁴) gets σ_up = σ_next in float32, so σ_down = 0 and the
    /// midpoint sigma exp(lerp(log σ, log 0, ½)) = 0, which its second stage divides by.
    /// </summary>
    private static bool ReferenceIsNonFiniteToo(string className, string key, string value)
        => key == "rescale_betas_zero_snr"
        || (className == "UniPCMultistepScheduler" && key is "predict_x0" or "lower_order_final")
        || (className == "KDPM2AncestralDiscreteScheduler" && key == "beta_schedule" && value == "squaredcos_cap_v2");

    public static IEnumerable<string> ClassNames() => SchedulerRegistry.ClassNames;

    [TestCaseSource(nameof(ClassNames))]
    public void EveryKeyRunsOrIsRefusedByName(string className)
    {
        var model = SchedulerTestKit.ModelConfig("sd15");
        var defaults = SchedulerRegistry.FromConfig(JsonConfig.Parse($$"""{"_class_name": "{{className}}"}""", "defaults")).Config.Root;
        var modelForClass = JsonConfig.Parse(model.Root.GetRawText().Replace("PNDMScheduler", className), "sd15 as " + className);
        int ran = 0, refused = 0;
        foreach (var p in defaults.EnumerateObject())
        {
            if (p.Name.StartsWith('_')) continue;
            foreach (var value in Alternatives(p.Name, p.Value))
            {
                string what = $"{className} {p.Name}={(value.Length > 40 ? value[..40] + "…" : value)}";
                var overrides = new Dictionary<string, string> { [p.Name] = value };
                LatentDiffusion.Abstractions.IScheduler scheduler;
                try { scheduler = SchedulerRegistry.FromConfig(modelForClass, overrides); }
                catch (NotSupportedException e)
                {
                    Assert.That(e.Message, Does.Contain(p.Name), what);
                    refused++;
                    continue;
                }
                using var scope = NewDisposeScope();
                using var g = new torch.Generator(3, CPU);
                using var run = scheduler.Start(3, g);
                var start = SchedulerTestKit.Latents([2, 4, 6, 10], 3) * run.InitNoiseSigma;
                bool learnedVariance = className == "DDPMScheduler" && p.Name == "variance_type" && value is "learned" or "learned_range";
                if (learnedVariance)
                {
                    // The model must predict the variance too: the toy model's 4 channels are refused by name ...
                    var error = Assert.Throws<ArgumentException>(() => run.Step(SchedulerTestKit.ToyModel(run, start, run.Timesteps[0]), run.Timesteps[0], start), what);
                    Assert.That(error!.Message, Does.Contain("variance_type").And.Contain("twice"), what);
                }
                var (result, calls) = learnedVariance ? DenoiseWithVariance(run, start, value) : SchedulerTestKit.Denoise(run, start, run.Timesteps);
                Assert.That(calls, Is.EqualTo(run.Timesteps.Count), what);
                if (!ReferenceIsNonFiniteToo(className, p.Name, value))
                    Assert.That(SchedulerTestKit.AllFinite(result), Is.True, what + ": finite");
                ran++;
            }
        }
        Assert.That(ran, Is.GreaterThan(refused), $"{className}: most documented values must run ({ran} ran, {refused} refused)");
    }

    /// <summary>
    /// ... so for <c>learned</c> / <c>learned_range</c> the toy model's prediction comes with 4 more channels in the
    /// reference's range: a variance ≥ 0 (0.01·tanh²) for <c>learned</c>, v = tanh ∈ [−1, 1] for <c>learned_range</c>.
    /// </summary>
    private static (Tensor Result, int Calls) DenoiseWithVariance(LatentDiffusion.Abstractions.ISchedulerRun run, Tensor start, string varianceType)
    {
        var x = start.clone();
        int calls = 0;
        foreach (var t in run.Timesteps)
        {
            using var eps = SchedulerTestKit.ToyModel(run, x, t);
            using var input = run.ScaleModelInput(x, t);
            using var v = varianceType == "learned" ? torch.tanh(input).square() * 0.01 : torch.tanh(input);
            using var output = torch.cat([eps, v], 1);
            calls++;
            var next = run.Step(output, t, x);
            Assert.That(next.shape, Is.EqualTo(x.shape), "the sample keeps its 4 channels");
            x.Dispose();
            x = next;
        }
        return (x, calls);
    }
}
