using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// Run state shared by the exponential-integrator solvers (DPM-Solver++ multistep and singlestep, DEIS, UniPC): the
/// model sees the sample unscaled, forward noise is α_t·x + σ_t·ε, an unknown timestep maps to the last step, and the
/// last <c>solver_order</c> converted model outputs are kept as the reference's <c>model_outputs</c>.
/// </summary>
internal abstract class ExponentialIntegratorRun : SchedulerRun
{
    protected ExponentialIntegratorRun(double[] timesteps, float[] sigmas, int solverOrder, torch.Generator? generator)
        : base(timesteps, sigmas, generator)
        => ModelOutputs = new Tensor?[solverOrder];

    /// <summary>The converted model outputs, oldest first; null until that many steps have been taken.</summary>
    protected Tensor?[] ModelOutputs { get; }

    /// <summary>The reference's <c>lower_order_nums</c>: steps taken so far, capped at the solver order (warm-up of the multistep history).</summary>
    protected int LowerOrderNums { get; private set; }

    public override Tensor ScaleModelInput(Tensor sample, double timestep) => sample.alias();

    public override Tensor AddNoise(Tensor original, Tensor noise, double timestep)
        => DpmSolverMath.AddNoise(original, noise, Sig[NoiseIndex(timestep)]);

    /// <summary>As <see cref="SchedulerRun.IndexForTimestep"/>, but the reference falls back to the last step for a timestep it does not know.</summary>
    protected override int IndexForTimestep(double timestep)
    {
        int matches = 0, first = -1;
        for (int i = 0; i < Timesteps.Count; i++)
            if (Timesteps[i] == timestep) { if (matches++ == 1) return i; first = first < 0 ? i : first; }
        return first >= 0 ? first : Timesteps.Count - 1;
    }

    /// <summary>Shifts the history by one and keeps <paramref name="converted"/> as the newest entry, releasing the one that falls out.</summary>
    protected void PushModelOutput(Tensor converted)
    {
        var oldest = ModelOutputs[0];
        for (int k = 0; k < ModelOutputs.Length - 1; k++) ModelOutputs[k] = ModelOutputs[k + 1];
        ModelOutputs[^1] = Keep(converted);
        if (oldest is not null && Array.IndexOf(ModelOutputs, oldest) < 0) Release(oldest);
    }

    /// <summary>Counts a finished step towards the warm-up and moves to step <paramref name="index"/> + 1.</summary>
    protected void CompleteStep(int index)
    {
        if (LowerOrderNums < ModelOutputs.Length) LowerOrderNums++;
        StepIndex = index + 1;
    }
}
