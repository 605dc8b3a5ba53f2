namespace LatentDiffusion.Schedulers;

/// <summary>
/// The EDM keys of <see cref="EdmEulerScheduler"/> and <see cref="EdmDpmSolverMultistepScheduler"/>, typed and checked,
/// read once when the scheduler is built (their defaults: <see cref="EdmPreconditioning.SigmaKeys"/>).
/// </summary>
/// <param name="SigmaMin"><c>sigma_min</c>: above 0.</param>
/// <param name="SigmaMax"><c>sigma_max</c>: above <paramref name="SigmaMin"/>.</param>
/// <param name="SigmaData"><c>sigma_data</c>: above 0.</param>
/// <param name="Karras"><c>sigma_schedule</c> is "karras" (else "exponential").</param>
/// <param name="Rho"><c>rho</c>: above 0.</param>
internal sealed record EdmConfig(double SigmaMin, double SigmaMax, double SigmaData, bool Karras, double Rho)
{
    /// <summary>Reads and checks the EDM keys.</summary>
    /// <exception cref="NotSupportedException">A <c>sigma_schedule</c> other than karras or exponential.</exception>
    /// <exception cref="InvalidDataException">Sigmas, sigma_data or rho out of range.</exception>
    public static EdmConfig Read(SchedulerConfigReader r)
    {
        bool karras = r.Choice("sigma_schedule", "karras", "exponential") == "karras";
        double min = r.Double("sigma_min"), max = r.Double("sigma_max"), data = r.Double("sigma_data"), rho = r.Double("rho");
        if (!(min > 0 && max > min && data > 0 && rho > 0))
            throw new InvalidDataException($"Config '{r.Source}': EDM sigmas need 0 < sigma_min ({min}) < sigma_max ({max}), sigma_data > 0 ({data}) and rho > 0 ({rho}).");
        return new EdmConfig(min, max, data, karras, rho);
    }
}
