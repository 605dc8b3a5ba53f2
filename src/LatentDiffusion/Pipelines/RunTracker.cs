namespace LatentDiffusion.Pipelines;

/// <summary>
/// The generations running on a pipeline, so that disposing it never frees weights under a running step: disposal
/// closes the tracker (no run starts any more), asks the running ones to stop through <see cref="Closing"/>, and the
/// components are released exactly once, by whichever comes last: the disposal itself, or the last run to end.
/// </summary>
internal sealed class RunTracker
{
    // The runs entered on this thread, so that a disposal from inside a run (a step callback, a progress handler)
    // does not wait for the run that called it.
    [ThreadStatic] private static List<RunTracker>? _enteredHere;

    private readonly object _gate = new();
    private readonly CancellationTokenSource _closing = new();
    private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Action _release;
    private int _running;
    private bool _closed;
    private bool _releaseStarted;

    /// <summary>Tracks runs; <paramref name="release"/> frees the components once no run uses them.</summary>
    public RunTracker(Action release) => _release = release;

    /// <summary>Cancelled when disposal begins: the running generations stop at their next check.</summary>
    public CancellationToken Closing => _closing.Token;

    /// <summary>True once disposal has begun.</summary>
    public bool IsClosed
    {
        get { lock (_gate) return _closed; }
    }

    /// <summary>True while at least one run has entered and not ended.</summary>
    public bool IsRunning
    {
        get { lock (_gate) return _running > 0; }
    }

    /// <summary>True when the calling thread is inside a run of this tracker.</summary>
    public bool EnteredOnThisThread => _enteredHere?.Contains(this) == true;

    /// <summary>Starts a run; dispose the returned lease when it ends.</summary>
    /// <exception cref="ObjectDisposedException">Disposal has begun.</exception>
    public Lease Enter(object owner)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_closed, owner);
            _running++;
        }
        (_enteredHere ??= new()).Add(this);
        return new Lease(this);
    }

    /// <summary>
    /// Begins disposal: no run starts any more and the running ones are asked to stop. Returns a task that completes
    /// once the components have been released (at once when nothing runs, otherwise when the last run ends).
    /// </summary>
    public Task Close()
    {
        // Cancelled before the tracker reads as closed, so that a run which sees IsClosed also sees the cancellation; a
        // run entered in between starts with a cancelled token and stops at its first check.
        _closing.Cancel();
        bool releaseNow;
        lock (_gate)
        {
            _closed = true;
            releaseNow = _running == 0 && !_releaseStarted;
            if (releaseNow) _releaseStarted = true;
        }
        if (releaseNow) Release();
        return _released.Task;
    }

    private void Exit()
    {
        _enteredHere?.Remove(this);
        bool releaseNow;
        lock (_gate)
        {
            _running--;
            releaseNow = _closed && _running == 0 && !_releaseStarted;
            if (releaseNow) _releaseStarted = true;
        }
        if (releaseNow) Release();
    }

    private void Release()
    {
        // A failure is reported to the disposer (through the task), not to the run that happened to end last.
        try
        {
            _release();
            _released.TrySetResult();
        }
        catch (Exception e)
        {
            _released.TrySetException(e);
        }
    }

    /// <summary>One run: disposing it ends the run.</summary>
    public sealed class Lease : IDisposable
    {
        private RunTracker? _tracker;

        internal Lease(RunTracker tracker) => _tracker = tracker;

        /// <summary>Ends the run (once).</summary>
        public void Dispose() => Interlocked.Exchange(ref _tracker, null)?.Exit();
    }
}
