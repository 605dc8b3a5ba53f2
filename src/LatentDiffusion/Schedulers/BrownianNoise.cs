using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// A Brownian motion W(σ) over the sigma axis, sampled lazily and exactly (independent Gaussian increments outside the
/// points drawn so far, Brownian-bridge draws between them), with every draw from one seeded generator. It plays the
/// role of the reference's torchsde Brownian tree in <see cref="DpmSolverSdeScheduler"/>: the noise of an interval
/// [a, b] is (W(a) − W(b))/sqrt(b − a), standard normal, and noises of overlapping intervals are correlated as Brownian
/// increments are. The draws are not torchsde's bit for bit (that package derives them from its own tree of seeds).
/// </summary>
internal sealed class BrownianNoise(long[] shape, torch.Generator? generator, Func<Tensor, Tensor> keep)
{
    private readonly SortedList<double, Tensor> _points = [];

    /// <summary>The normalised increment between <paramref name="sigma"/> and <paramref name="sigmaNext"/> (either order).</summary>
    public Tensor Increment(double sigma, double sigmaNext)
    {
        double a = Math.Min(sigma, sigmaNext), b = Math.Max(sigma, sigmaNext);
        var wa = At(a);
        var wb = At(b);
        return (wa - wb) / Math.Sqrt(b - a);
    }

    /// <summary>W at <paramref name="s"/>, drawing it if new (float64, CPU; kept alive by <c>keep</c>).</summary>
    private Tensor At(double s)
    {
        if (_points.TryGetValue(s, out var known)) return known;
        Tensor w;
        if (_points.Count == 0)
            w = torch.zeros(shape, dtype: ScalarType.Float64);
        else
        {
            int above = 0;
            while (above < _points.Count && _points.Keys[above] < s) above++;
            using var z = torch.randn(shape, dtype: ScalarType.Float32, generator: generator).to(ScalarType.Float64);
            if (above == 0)
                w = _points.Values[0] + z * Math.Sqrt(_points.Keys[0] - s);
            else if (above == _points.Count)
                w = _points.Values[^1] + z * Math.Sqrt(s - _points.Keys[^1]);
            else
            {
                // Brownian bridge between the neighbours.
                double lo = _points.Keys[above - 1], hi = _points.Keys[above];
                double u = (s - lo) / (hi - lo);
                w = _points.Values[above - 1] * (1 - u) + _points.Values[above] * u + z * Math.Sqrt((s - lo) * (hi - s) / (hi - lo));
            }
        }
        // The run owns the points (released when it is disposed).
        w = keep(w);
        _points[s] = w;
        return w;
    }
}
