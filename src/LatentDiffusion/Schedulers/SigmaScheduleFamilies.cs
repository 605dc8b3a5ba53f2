namespace LatentDiffusion.Schedulers;

/// <summary>
/// The schedule families popular UIs offer for the sigma samplers (ComfyUI's "scheduler" names, A1111's "Schedule
/// type"): <c>karras</c>, <c>exponential</c> and <c>beta</c> are the reference's <c>use_karras_sigmas</c>,
/// <c>use_exponential_sigmas</c> and <c>use_beta_sigmas</c>; <c>normal</c>, <c>simple</c>, <c>sgm_uniform</c> and
/// <c>ddim_uniform</c> are ComfyUI's definitions, computed from the model's own sigmas (float32 σ_t =
/// sqrt((1 − ᾱ_t)/ᾱ_t) as this library computes them; ComfyUI derives them from a float64 ᾱ, which differs below 1e-5
/// relative). The model is then conditioned on the reference's interpolated training timestep of each sigma (ComfyUI
/// rounds to the nearest one).
/// </summary>
internal static class SigmaScheduleFamilies
{
    /// <summary>The config key (an extension of this library, carried like any other key) and override that selects a family.</summary>
    public const string Key = "schedule";

    /// <summary>Every family, in UI order.</summary>
    public static readonly string[] All = ["karras", "exponential", "beta", "normal", "simple", "sgm_uniform", "ddim_uniform"];

    /// <summary>The families computed here rather than by the reference's sigma conversions.</summary>
    public static readonly string[] Custom = ["normal", "simple", "sgm_uniform", "ddim_uniform"];

    /// <summary>A1111's "Schedule type" label of a family.</summary>
    public static string A1111Label(string family) => family switch
    {
        "karras" => "Karras",
        "exponential" => "Exponential",
        "beta" => "Beta",
        "normal" => "Normal",
        "simple" => "Simple",
        "sgm_uniform" => "SGM Uniform",
        _ => "DDIM",
    };

    /// <summary>The family name for a spelling such as "sgm-uniform" or "SGM_Uniform", or null.</summary>
    public static string? Normalise(string text)
    {
        string f = text.Trim().ToLowerInvariant().Replace('-', '_');
        return All.Contains(f) ? f : null;
    }

    /// <summary>
    /// The sigmas of a custom family, largest first, including the final one (0, or none where the model's smallest
    /// sigma is itself ≈ 0); <paramref name="sigmas"/> are the model's, ascending with t. <c>ddim_uniform</c> can
    /// return a different number of steps than asked, as ComfyUI's.
    /// </summary>
    public static float[] Build(string family, float[] sigmas, int steps)
    {
        int T = sigmas.Length;
        var logSigmas = sigmas.Select(s => MathF.Log(s)).ToArray();
        switch (family)
        {
            case "simple":
            {
                double ss = T / (double)steps;
                return [.. Enumerable.Range(0, steps).Select(x => sigmas[T - 1 - (int)(x * ss)]), 0f];
            }
            case "ddim_uniform":
            {
                var list = new List<float>();
                int n = steps;
                if (Math.Abs(sigmas[1]) <= 1e-5) n++;
                else list.Add(0f);
                int ss = Math.Max(T / n, 1);
                for (int x = 1; x < T; x += ss) list.Add(sigmas[x]);
                list.Reverse();
                return [.. list];
            }
            case "sgm_uniform":
            case "normal":
            {
                bool sgm = family == "sgm_uniform";
                // ComfyUI's timestep(σ) is the nearest training index: T − 1 for σ_max and 0 for σ_min.
                float start = T - 1, end = 0;
                int n = steps;
                bool appendZero = true;
                if (!sgm && Math.Abs(SigmaAt(end, logSigmas)) <= 1e-5) { n++; appendZero = false; }
                var t = sgm ? TorchLinspace(start, end, n + 1)[..^1] : TorchLinspace(start, end, n);
                var list = t.Select(v => SigmaAt(v, logSigmas)).ToList();
                if (appendZero) list.Add(0f);
                return [.. list];
            }
            default:
                throw new NotSupportedException($"Schedule '{family}' is not computed here (supported: {string.Join(", ", Custom)}).");
        }
    }

    /// <summary>ComfyUI's sigma(t): log σ interpolated linearly between the neighbouring training steps, float32.</summary>
    private static float SigmaAt(float t, float[] logSigmas)
    {
        t = Math.Clamp(t, 0, logSigmas.Length - 1);
        int low = (int)MathF.Floor(t), high = (int)MathF.Ceiling(t);
        float w = t - MathF.Floor(t);
        return MathF.Exp((1 - w) * logSigmas[low] + w * logSigmas[high]);
    }

    /// <summary>torch.linspace in float32: start + i·step for the first half, end − (n−1−i)·step for the second.</summary>
    private static float[] TorchLinspace(float start, float end, int n)
    {
        if (n == 1) return [start];
        float step = (end - start) / (n - 1);
        int half = n / 2;
        return [.. Enumerable.Range(0, n).Select(i => i < half ? start + step * i : end - step * (n - 1 - i))];
    }
}
