using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Training;

/// <summary>
/// An exponential moving average of parameters (shadow weights), the usual way diffusion models are evaluated: after each
/// optimisation step <c>shadow = decay·shadow + (1 − decay)·param</c>. The shadows are float32 copies on the parameters'
/// devices.
/// </summary>
public sealed class ExponentialMovingAverage : IDisposable
{
    private readonly (string Name, Parameter Param, Tensor Shadow)[] _entries;

    /// <summary>Starts the average at the parameters' current values.</summary>
    public ExponentialMovingAverage(IEnumerable<(string Name, Parameter Param)> parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        using var noGrad = no_grad();
        _entries = parameters.Select(p =>
        {
            var shadow = p.Param.detach().to(ScalarType.Float32, copy: true);
            shadow.DetachFromDisposeScope();
            return (p.Name, p.Param, shadow);
        }).ToArray();
    }

    /// <summary>
    /// The decay used at optimisation step <paramref name="step"/> (0-based): <c>min(maxDecay, (1 + step) / (10 + step))</c>,
    /// the reference trainers' warm-up, so that the average follows the fast early changes instead of the random start.
    /// </summary>
    public static double DecayAt(double maxDecay, int step) => Math.Min(maxDecay, (1.0 + step) / (10.0 + step));

    /// <summary>The shadow weights by parameter name (owned by this object).</summary>
    public IReadOnlyDictionary<string, Tensor> Shadows => _entries.ToDictionary(e => e.Name, e => e.Shadow);

    /// <summary>shadow ← decay·shadow + (1 − decay)·param for every parameter.</summary>
    public void Update(double decay)
    {
        if (decay is < 0 or > 1) throw new ArgumentOutOfRangeException(nameof(decay), decay, "The decay must be in [0, 1].");
        using var noGrad = no_grad();
        foreach (var (_, param, shadow) in _entries)
        {
            using var p = param.to(ScalarType.Float32);
            shadow.mul_(decay).add_(p, alpha: 1 - decay);
        }
    }

    /// <summary>Copies the shadow weights into the parameters (converted to their dtype).</summary>
    public void CopyToParameters()
    {
        using var noGrad = no_grad();
        foreach (var (_, param, shadow) in _entries) param.copy_(shadow);
    }

    /// <summary>Replaces the shadows with <paramref name="shadows"/> (by name; every parameter must be there with its shape).</summary>
    /// <exception cref="InvalidDataException">A shadow is missing or of the wrong shape.</exception>
    public void Load(IReadOnlyDictionary<string, Tensor> shadows)
    {
        using var noGrad = no_grad();
        foreach (var (name, _, shadow) in _entries)
        {
            if (!shadows.TryGetValue(name, out var value)) throw new InvalidDataException($"EMA weight '{name}' is missing.");
            if (!value.shape.SequenceEqual(shadow.shape))
                throw new InvalidDataException($"EMA weight '{name}' has shape [{string.Join(", ", value.shape)}], expected [{string.Join(", ", shadow.shape)}].");
            shadow.copy_(value);
        }
    }

    /// <summary>Releases the shadows.</summary>
    public void Dispose()
    {
        foreach (var e in _entries) e.Shadow.Dispose();
    }
}
