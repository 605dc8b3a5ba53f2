using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// The EDM formulation (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models") shared
/// by <see cref="EdmEulerScheduler"/> and <see cref="EdmDpmSolverMultistepScheduler"/>: sigmas straight from
/// [σ_min, σ_max] (Karras ρ-spacing or exponential), no beta schedule, the model conditioned on c_noise = ¼·ln σ and
/// preconditioned by c_in = 1/sqrt(σ² + σ_data²), c_skip = σ_data²/(σ² + σ_data²), c_out = ±σ·σ_data/sqrt(σ² + σ_data²).
/// Float32 where the reference computes in torch float32.
/// </summary>
internal static class EdmPreconditioning
{
    /// <summary>The keys both EDM classes share, with the reference's defaults.</summary>
    public static readonly (string Key, object? Default)[] SigmaKeys =
    [
        ("sigma_min", 0.002), ("sigma_max", 80.0), ("sigma_data", 0.5), ("sigma_schedule", "karras"), ("num_train_timesteps", 1000),
        ("prediction_type", "epsilon"), ("rho", 7.0),
    ];

    /// <summary>
    /// The <paramref name="steps"/> float32 sigmas of set_timesteps, σ_max first. Karras: the ramp linspace(0, 1) in
    /// <paramref name="karrasDtype"/> (float64 for EDM Euler, float32 for EDM DPM-Solver), (σ_max^(1/ρ) + r·(σ_min^(1/ρ) −
    /// σ_max^(1/ρ)))^ρ; exponential: exp of a float32 linspace of ln σ, flipped.
    /// </summary>
    public static float[] Sigmas(EdmConfig config, int steps, ScalarType karrasDtype)
    {
        using var scope = torch.NewDisposeScope();
        double min = config.SigmaMin, max = config.SigmaMax;
        Tensor sigmas;
        if (config.Karras)
        {
            double rho = config.Rho;
            double minInv = Math.Pow(min, 1 / rho), maxInv = Math.Pow(max, 1 / rho);
            var ramp = Linspace(0, 1, steps, karrasDtype);
            sigmas = (ramp * (minInv - maxInv) + maxInv).pow(rho);
        }
        else
            sigmas = Linspace(Math.Log(min), Math.Log(max), steps, ScalarType.Float32).exp().flip(0);
        return sigmas.to(ScalarType.Float32).data<float>().ToArray();
    }

    /// <summary>torch.linspace, whose single point is <paramref name="start"/> (so one exponential step is σ_min, as the reference).</summary>
    private static Tensor Linspace(double start, double end, int steps, ScalarType dtype)
        => steps == 1 ? torch.tensor(new[] { start }).to(dtype) : torch.linspace(start, end, steps, dtype: dtype);

    /// <summary>c_noise = ¼·ln σ of each sigma (float32): the timesteps the model is conditioned on.</summary>
    public static double[] Timesteps(float[] sigmas)
    {
        using var scope = torch.NewDisposeScope();
        var t = torch.tensor(sigmas).log() * 0.25;
        return t.data<float>().ToArray().Select(v => (double)v).ToArray();
    }

    /// <summary>The model input x·c_in.</summary>
    public static Tensor ScaleInput(EdmConfig config, Tensor sample, float sigma)
    {
        float data = (float)config.SigmaData;
        float cIn = 1f / MathF.Sqrt(sigma * sigma + (float)(data * (double)data));
        return sample * cIn;
    }

    /// <summary>The denoised estimate c_skip·x + c_out·F(x) (c_out negative for v-prediction).</summary>
    public static Tensor Denoised(EdmConfig config, string predictionType, Tensor sample, Tensor modelOutput, float sigma, string className)
    {
        double data = config.SigmaData;
        float data2 = (float)(data * data);
        float cSkip = data2 / (sigma * sigma + data2);
        float cOut = predictionType switch
        {
            "epsilon" => sigma * (float)data / MathF.Sqrt(sigma * sigma + data2),
            "v_prediction" => -sigma * (float)data / MathF.Sqrt(sigma * sigma + data2),
            _ => throw new NotSupportedException($"{className}: prediction_type '{predictionType}' is not supported (supported: epsilon, v_prediction)."),
        };
        return cSkip * sample + cOut * modelOutput;
    }

    /// <summary>init_noise_sigma = sqrt(σ_max² + 1) (the reference's, in double).</summary>
    public static double InitNoiseSigma(EdmConfig config)
    {
        double max = config.SigmaMax;
        return Math.Sqrt(max * max + 1);
    }
}
