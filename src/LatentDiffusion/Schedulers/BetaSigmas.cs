namespace LatentDiffusion.Schedulers;

/// <summary>
/// The beta sigma schedule ("Beta Sampling is All You Need", Lee et al. 2024), the reference's
/// <c>_convert_to_beta</c>: σ_i = σ_min + F⁻¹(1 − i/(n−1))·(σ_max − σ_min) with F⁻¹ the Beta(α, β) quantile
/// (α = β = 0.6, as the reference), which crowds the steps at both ends of the sigma range. Computed in double like
/// the reference's numpy and scipy.
/// </summary>
internal static class BetaSigmas
{
    /// <summary>The reference's shape parameters.</summary>
    public const double Alpha = 0.6, Beta = 0.6;

    /// <summary><paramref name="n"/> sigmas from <paramref name="sigmaMax"/> down to <paramref name="sigmaMin"/>.</summary>
    public static double[] Build(double sigmaMin, double sigmaMax, int n)
        => NoiseSchedule.Linspace(0, 1, n).Select(r => sigmaMin + Quantile(1 - r, Alpha, Beta) * (sigmaMax - sigmaMin)).ToArray();

    /// <summary>
    /// The Beta(<paramref name="a"/>, <paramref name="b"/>) quantile (scipy.stats.beta.ppf): Math.NET's root of the
    /// regularized incomplete beta function, polished by Newton steps on the same function so it is exact to double
    /// rounding; 0 and 1 map to 0 and 1.
    /// </summary>
    public static double Quantile(double p, double a, double b)
    {
        if (p <= 0) return 0;
        if (p >= 1) return 1;
        double x = MathNet.Numerics.Distributions.Beta.InvCDF(a, b, p);
        double logB = MathNet.Numerics.SpecialFunctions.BetaLn(a, b);
        for (int k = 0; k < 3; k++)
        {
            double f = MathNet.Numerics.SpecialFunctions.BetaRegularized(a, b, x) - p;
            double density = Math.Exp((a - 1) * Math.Log(x) + (b - 1) * Math.Log(1 - x) - logB);
            double next = x - f / density;
            if (!(next > 0 && next < 1) || next == x) break;
            x = next;
        }
        return x;
    }
}
