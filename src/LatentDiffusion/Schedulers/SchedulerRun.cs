using LatentDiffusion.Abstractions;
using LatentDiffusion.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// Base of a scheduler run (one generation): the schedule, the step index (found from the first timestep seen, or set by
/// <see cref="SetBeginIndex"/>, as the reference does), the generator, and the history tensors a multistep solver keeps.
/// Every built-in run derives from it, and so can a user's: implement <see cref="ScaleModelInput"/>,
/// <see cref="Step"/> and <see cref="AddNoise"/>, find the step with <see cref="CurrentIndex"/>, advance
/// <see cref="StepIndex"/>, draw noise with <see cref="Noise"/> and keep tensors across steps with <see cref="Keep"/>.
/// </summary>
/// <remarks>Not thread-safe: one run per generation. <see cref="Dispose"/> releases the tensors it keeps.</remarks>
public abstract class SchedulerRun : ISchedulerRun
{
    private readonly double[] _timesteps;
    private readonly List<Tensor> _owned = [];
    private bool _disposed;

    /// <summary>Starts a run over <paramref name="timesteps"/> (copied).</summary>
    /// <param name="timesteps">The run's timesteps in the order the model is called (the reference's <c>scheduler.timesteps</c>).</param>
    /// <param name="sigmas">The run's sigmas (float32, copied), or null for a scheduler without them.</param>
    /// <param name="generator">The CPU generator <see cref="Noise"/> draws from; null for the global one.</param>
    /// <exception cref="ArgumentNullException"><paramref name="timesteps"/> is null.</exception>
    protected SchedulerRun(IReadOnlyList<double> timesteps, IReadOnlyList<float>? sigmas, torch.Generator? generator)
    {
        ArgumentNullException.ThrowIfNull(timesteps);
        _timesteps = [.. timesteps];
        Timesteps = Array.AsReadOnly(_timesteps);
        SigmaValues = sigmas is null ? null : [.. sigmas];
        Generator = generator;
    }

    /// <inheritdoc/>
    public IReadOnlyList<double> Timesteps { get; }

    /// <summary>The float32 sigmas, when the scheduler has them.</summary>
    private protected float[]? SigmaValues { get; }

    /// <summary>The float32 sigmas of a sigma scheduler.</summary>
    private protected float[] Sig => SigmaValues ?? throw new InvalidOperationException("This scheduler has no sigmas.");

    /// <summary>The run's float32 sigma at <paramref name="index"/>.</summary>
    /// <exception cref="InvalidOperationException">The run was started without sigmas.</exception>
    /// <exception cref="IndexOutOfRangeException"><paramref name="index"/> is outside the sigmas.</exception>
    protected float SigmaAt(int index) => Sig[index];

    private IReadOnlyList<double>? _sigmas;

    /// <inheritdoc/>
    public IReadOnlyList<double>? Sigmas => SigmaValues is null ? null : _sigmas ??= Array.AsReadOnly(SigmaValues.Select(s => (double)s).ToArray());

    /// <inheritdoc/>
    public virtual double InitNoiseSigma => 1.0;

    /// <inheritdoc/>
    public virtual int Order => 1;

    /// <summary>The generator the run was started with (null: libtorch's global one); <see cref="Noise"/> draws from it.</summary>
    protected torch.Generator? Generator { get; }

    /// <summary>The reference's <c>_step_index</c>: null until the first call.</summary>
    protected int? StepIndex { get; set; }

    /// <summary>The reference's <c>_begin_index</c>.</summary>
    protected int? BeginIndex { get; private set; }

    /// <inheritdoc/>
    public void SetBeginIndex(int beginIndex)
    {
        if (beginIndex < 0 || beginIndex > _timesteps.Length)
            throw new ArgumentOutOfRangeException(nameof(beginIndex), beginIndex, $"The begin index must be between 0 and {_timesteps.Length}.");
        BeginIndex = beginIndex;
    }

    /// <inheritdoc/>
    public abstract Tensor ScaleModelInput(Tensor sample, double timestep);

    /// <inheritdoc/>
    public abstract Tensor Step(Tensor modelOutput, double timestep, Tensor sample);

    /// <inheritdoc/>
    public abstract Tensor AddNoise(Tensor original, Tensor noise, double timestep);

    /// <summary>
    /// Sets the step index on first use, as the reference's <c>_init_step_index</c>, and returns it: the begin index when
    /// one was set, else the timestep's position (<see cref="IndexForTimestep"/>) — except that a run whose first call
    /// brings the first timestep of its own schedule starts there, at index 0.
    /// </summary>
    /// <remarks>
    /// The reference takes the second occurrence of a repeated timestep so that a run entered in the middle of its
    /// schedule (image-to-image without a begin index) does not skip a sigma. At the very start nothing can be skipped,
    /// but Karras sigmas on a zero-terminal-SNR schedule repeat the first timestep (999, 999, 999, 998, …); taking the
    /// second copy there left the last step without a sigma to step to and ended every text-to-image run with an error.
    /// Text-to-image walks its own list from index 0.
    /// </remarks>
    protected int CurrentIndex(double timestep)
    {
        StepIndex ??= BeginIndex ?? (_timesteps.Length > 0 && _timesteps[0] == timestep ? 0 : IndexForTimestep(timestep));
        return StepIndex.Value;
    }

    /// <summary>The position of <paramref name="timestep"/>; the second one when it occurs twice, so img2img never skips a step.</summary>
    protected virtual int IndexForTimestep(double timestep)
    {
        int first = -1;
        for (int i = 0; i < _timesteps.Length; i++)
        {
            if (_timesteps[i] != timestep) continue;
            if (first >= 0) return i;
            first = i;
        }
        return first >= 0 ? first : throw new ArgumentException($"Timestep {timestep} is not in this run's schedule.", nameof(timestep));
    }

    /// <summary>The sigma index add_noise uses: the timestep's position before stepping, the current step after.</summary>
    protected int NoiseIndex(double timestep) => BeginIndex is null ? IndexForTimestep(timestep) : StepIndex ?? BeginIndex.Value;

    private IReadOnlyList<torch.Generator>? _perImage;

    /// <summary>
    /// Draws row i of every noise tensor from <paramref name="generators"/>[i] instead of one batch draw from
    /// <see cref="Generator"/> (the reference's list of generators: each image its own stream).
    /// </summary>
    internal void UsePerImageGenerators(IReadOnlyList<torch.Generator> generators) => _perImage = generators;

    /// <summary>
    /// Unit Gaussian noise shaped like <paramref name="like"/>: drawn on the CPU in float32 from the run's generator (row
    /// by row from the per-image generators when set), then moved.
    /// </summary>
    protected Tensor Noise(Tensor like)
    {
        if (_perImage is { Count: > 1 } generators)
        {
            using var rows = PerImageNoise.Randn(like.shape, generators);
            return rows.to(like.dtype, like.device);
        }
        using var n = torch.randn(like.shape, dtype: ScalarType.Float32, device: CPU, generator: Generator);
        return n.to(like.dtype, like.device);
    }

    /// <summary>Keeps a tensor alive past the caller's dispose scope until it is released or the run is disposed.</summary>
    protected Tensor Keep(Tensor t)
    {
        ThrowIfDisposed();
        var kept = t.detach().clone();
        kept.DetachFromDisposeScope();
        _owned.Add(kept);
        return kept;
    }

    /// <summary>Releases a tensor obtained from <see cref="Keep"/>.</summary>
    protected void Release(Tensor? t)
    {
        if (t is null) return;
        // By reference: Tensor.Equals compares values, so List.Remove could drop another kept tensor that happens to be equal.
        int at = _owned.FindIndex(x => ReferenceEquals(x, t));
        if (at < 0) return;
        _owned.RemoveAt(at);
        t.Dispose();
    }

    /// <summary>Throws <see cref="ObjectDisposedException"/> once the run is disposed.</summary>
    protected void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>Checks the run is not disposed and <paramref name="index"/> is within the schedule.</summary>
    /// <exception cref="InvalidOperationException">Every step of the run has been taken.</exception>
    protected void EnsureNotFinished(int index)
    {
        ThrowIfDisposed();
        if (index >= _timesteps.Length) throw new InvalidOperationException($"All {_timesteps.Length} steps of this run have been taken.");
    }

    /// <summary>Releases the tensors the run keeps (<see cref="Keep"/>); the run cannot step afterwards.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var t in _owned) t.Dispose();
        _owned.Clear();
    }
}
