using TorchSharp;

namespace LatentDiffusion.Runtime;

/// <summary>The number of threads libtorch's CPU kernels use (intra-op parallelism), as stable-diffusion.cpp's <c>-t</c>.</summary>
public static class TorchThreads
{
    /// <summary>The largest count accepted.</summary>
    public const int Max = 1024;

    /// <summary>The count libtorch uses now (by default, its choice from the machine's cores and <c>OMP_NUM_THREADS</c>).</summary>
    public static int Current
    {
        get
        {
            TorchRuntime.EnsureInitialized();
            return torch.get_num_threads();
        }
    }

    /// <summary>
    /// Sets the count for the whole process (libtorch has one CPU thread pool); null leaves it as it is.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="threads"/> is below 1 or above <see cref="Max"/>.</exception>
    public static void Apply(int? threads)
    {
        if (threads is not { } n) return;
        Validate(n);
        TorchRuntime.EnsureInitialized();
        if (torch.get_num_threads() != n) torch.set_num_threads(n);
    }

    /// <summary>Refuses a count below 1 or above <see cref="Max"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The message names the value and the range.</exception>
    public static void Validate(int threads)
    {
        if (threads is < 1 or > Max)
            throw new ArgumentOutOfRangeException(nameof(threads), threads, $"Threads must be between 1 and {Max}; got {threads}.");
    }
}
