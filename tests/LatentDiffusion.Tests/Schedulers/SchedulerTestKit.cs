using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using LatentDiffusion.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>
/// The fixtures' toy model and the scheduler configs of the public models, for tests that go beyond the fixtures'
/// cases (other shapes, step counts, configs, entry points).
/// </summary>
internal static class SchedulerTestKit
{
    /// <summary>The public SD 1.5 <c>scheduler/scheduler_config.json</c> (runwayml/stable-diffusion-v1-5): PNDM, PLMS only.</summary>
    public const string Sd15 = """
        {
          "_class_name": "PNDMScheduler",
          "_diffusers_version": "0.6.0",
          "beta_end": 0.012,
          "beta_schedule": "scaled_linear",
          "beta_start": 0.00085,
          "num_train_timesteps": 1000,
          "set_alpha_to_one": false,
          "skip_prk_steps": true,
          "steps_offset": 1,
          "trained_betas": null,
          "clip_sample": false
        }
        """;

    /// <summary>The public SD 2 (768-v) scheduler config (stabilityai/stable-diffusion-2): Euler, v-prediction.</summary>
    public const string Sd2Euler = """
        {
          "_class_name": "EulerDiscreteScheduler",
          "_diffusers_version": "0.10.0.dev0",
          "beta_end": 0.012,
          "beta_schedule": "scaled_linear",
          "beta_start": 0.00085,
          "clip_sample": false,
          "num_train_timesteps": 1000,
          "prediction_type": "v_prediction",
          "set_alpha_to_one": false,
          "skip_prk_steps": true,
          "steps_offset": 1,
          "trained_betas": null
        }
        """;

    /// <summary>The public SD 2.1 scheduler config (stabilityai/stable-diffusion-2-1): DDIM, v-prediction.</summary>
    public const string Sd21Ddim = """
        {
          "_class_name": "DDIMScheduler",
          "_diffusers_version": "0.8.0",
          "beta_end": 0.012,
          "beta_schedule": "scaled_linear",
          "beta_start": 0.00085,
          "clip_sample": false,
          "num_train_timesteps": 1000,
          "prediction_type": "v_prediction",
          "set_alpha_to_one": false,
          "skip_prk_steps": true,
          "steps_offset": 1,
          "trained_betas": null
        }
        """;

    /// <summary>The public SDXL base 1.0 scheduler config: Euler, "leading" spacing with steps_offset 1.</summary>
    public const string Sdxl = """
        {
          "_class_name": "EulerDiscreteScheduler",
          "_diffusers_version": "0.19.0.dev0",
          "beta_end": 0.012,
          "beta_schedule": "scaled_linear",
          "beta_start": 0.00085,
          "clip_sample": false,
          "interpolation_type": "linear",
          "num_train_timesteps": 1000,
          "prediction_type": "epsilon",
          "sample_max_value": 1.0,
          "set_alpha_to_one": false,
          "skip_prk_steps": true,
          "steps_offset": 1,
          "timestep_spacing": "leading",
          "trained_betas": null,
          "use_karras_sigmas": false
        }
        """;

    /// <summary>The public model configs by name.</summary>
    public static readonly IReadOnlyDictionary<string, string> ModelConfigs = new Dictionary<string, string>
    {
        ["sd15"] = Sd15, ["sd2"] = Sd2Euler, ["sd21"] = Sd21Ddim, ["sdxl"] = Sdxl,
    };

    /// <summary>A model config by name, parsed.</summary>
    public static JsonConfig ModelConfig(string name) => JsonConfig.Parse(ModelConfigs[name], name + " scheduler_config.json");

    /// <summary>The built-in model's scheduler config (zero terminal SNR, trailing, v-prediction), as shipped with the tool.</summary>
    public static JsonConfig BuiltInModelConfig()
        => JsonConfig.Load(Path.Combine(AppContext.BaseDirectory, "models", "shapes", "scheduler", "scheduler_config.json"));

    /// <summary>The fixtures' toy denoiser: eps = tanh(scale_model_input(x, t))·0.5 + 0.01·t/1000.</summary>
    public static Tensor ToyModel(ISchedulerRun run, Tensor x, double t)
    {
        using var input = run.ScaleModelInput(x, t);
        return torch.tanh(input) * 0.5 + 0.01 * t / 1000.0;
    }

    /// <summary>Steps <paramref name="start"/> through <paramref name="timesteps"/> with the toy model; returns the result and the number of model calls.</summary>
    public static (Tensor Result, int Calls) Denoise(ISchedulerRun run, Tensor start, IEnumerable<double> timesteps)
    {
        var x = start.clone();
        int calls = 0;
        foreach (var t in timesteps)
        {
            using var eps = ToyModel(run, x, t);
            calls++;
            var next = run.Step(eps, t, x);
            x.Dispose();
            x = next;
        }
        return (x, calls);
    }

    /// <summary>Unit Gaussian latents of <paramref name="shape"/> from a seeded CPU generator.</summary>
    public static Tensor Latents(long[] shape, ulong seed)
    {
        using var g = new torch.Generator(seed, CPU);
        return torch.randn(shape, dtype: ScalarType.Float32, generator: g);
    }

    /// <summary>True when every element is finite.</summary>
    public static bool AllFinite(Tensor t) => t.isfinite().all().item<bool>();
}
