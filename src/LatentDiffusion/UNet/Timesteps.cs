using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.UNet;

/// <summary>
/// Sinusoidal timestep features (the "positional" time embedding of DDPM): each timestep becomes
/// <c>[cos(t·f), sin(t·f)]</c> (or sine first) over geometrically spaced frequencies f. Always float32, like the reference,
/// so that the features of large timesteps are not rounded away before the learned projection.
/// </summary>
public sealed class Timesteps : nn.Module<Tensor, Tensor>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    private readonly int _numChannels;
    private readonly bool _flipSinToCos;
    private readonly double _scale;
    // Derived from the config, not a weight: deliberately not a registered buffer.
    private Tensor _frequencies;

    /// <summary>Creates the feature map.</summary>
    /// <param name="numChannels">Features per timestep.</param>
    /// <param name="flipSinToCos">Cosine features first.</param>
    /// <param name="downscaleFreqShift">Shift of the frequency denominator (<c>freq_shift</c>).</param>
    /// <param name="device">Where the frequencies are kept.</param>
    /// <param name="scale">Multiplier of the phases.</param>
    /// <param name="maxPeriod">The longest period.</param>
    public Timesteps(int numChannels, bool flipSinToCos, double downscaleFreqShift, Device device, double scale = 1.0, double maxPeriod = 10000)
        : base(nameof(Timesteps))
    {
        _numChannels = numChannels;
        _flipSinToCos = flipSinToCos;
        _scale = scale;
        int half = numChannels / 2;
        // Same float32 operation order as the reference, computed once instead of every step.
        using var exponent = arange(0, half, dtype: ScalarType.Float32, device: device).mul_(-Math.Log(maxPeriod)).div_(half - downscaleFreqShift);
        // Kept for the module's lifetime, even when the model is built inside a caller's dispose scope.
        _frequencies = exponent.exp().DetachFromDisposeScope();
    }

    /// <summary>Features of <paramref name="timesteps"/> (<c>[n]</c>, any numeric dtype): <c>[n, numChannels]</c>, float32.</summary>
    public override Tensor forward(Tensor timesteps)
    {
        using var scope = NewDisposeScope();
        if (!Devices.Same(_frequencies.device, timesteps.device))
        {
            var moved = _frequencies.to(timesteps.device).DetachFromDisposeScope();
            _frequencies.Dispose();
            _frequencies = moved;
        }
        var phases = timesteps.to(ScalarType.Float32).unsqueeze(1) * _frequencies.unsqueeze(0);
        if (_scale != 1.0) phases = phases * _scale;
        var features = _flipSinToCos ? cat([phases.cos(), phases.sin()], 1) : cat([phases.sin(), phases.cos()], 1);
        if (_numChannels % 2 == 1) features = nn.functional.pad(features, [0, 1, 0, 0]);
        return features.MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing) _frequencies.Dispose();
        base.Dispose(disposing);
    }
}
