using LatentDiffusion.Pipelines;

namespace LatentDiffusion.Cli;

/// <summary>
/// Progress in the steps the user asked for. The pipeline reports denoiser calls (<see cref="DiffusionProgress"/>),
/// which can be more than the steps: PNDM adds a warm-up call (10 steps are 11 calls), Heun and KDPM2 call twice a
/// step. Call k of n is shown as step ceil(k · steps / n), and only when that number changes.
/// </summary>
internal abstract class StepProgress(int steps) : IProgress<DiffusionProgress>
{
    private int _shown;

    /// <summary>The steps the user asked for (for image-to-image, the ones the strength keeps).</summary>
    public int Steps { get; } = steps;

    /// <summary>The user step that denoiser call <paramref name="call"/> of <paramref name="calls"/> completes.</summary>
    public static int UserStep(int call, int calls, int steps)
        => calls <= 0 ? steps : (int)Math.Min(steps, ((long)call * steps + calls - 1) / calls);

    public void Report(DiffusionProgress p)
    {
        int step = UserStep(p.Step, p.TotalSteps, Steps);
        if (step == _shown) return;
        _shown = step;
        Show(step, p.Elapsed);
    }

    protected abstract void Show(int step, TimeSpan elapsed);

    /// <summary>Ends the progress display.</summary>
    public virtual void Done() { }

    /// <summary>A bar on a terminal, plain lines otherwise (a log file, a pipe, a CI job).</summary>
    public static StepProgress For(TextWriter stderr, int steps)
        => ReferenceEquals(stderr, Console.Error) && !Console.IsErrorRedirected ? new ProgressBar(stderr, steps) : new ProgressLines(stderr, steps);
}

/// <summary>A one-line progress bar on a terminal.</summary>
internal sealed class ProgressBar(TextWriter writer, int steps) : StepProgress(steps)
{
    protected override void Show(int step, TimeSpan elapsed)
    {
        const int width = 30;
        int filled = step * width / Steps;
        writer.Write($"\r[{new string('#', filled)}{new string('.', width - filled)}] {step}/{Steps} {elapsed.TotalSeconds:F1}s");
    }

    public override void Done() => writer.WriteLine();
}

/// <summary>One plain line per step, for standard error that is not a terminal.</summary>
internal sealed class ProgressLines(TextWriter writer, int steps) : StepProgress(steps)
{
    protected override void Show(int step, TimeSpan elapsed)
        => writer.WriteLine(FormattableString.Invariant($"step {step}/{Steps} ({elapsed.TotalSeconds:F1} s)"));
}
