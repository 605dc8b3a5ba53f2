using static TorchSharp.torch;

namespace LatentDiffusion.Vae;

/// <summary>
/// Releases intermediates the moment they are consumed, as reference counting does in the reference: a dispose scope
/// around a whole decoder would keep every block's output alive to the end, which at 512x512 costs gigabytes.
/// </summary>
internal static class Eager
{
    /// <summary>SiLU, in place when no gradient is recorded (the input is a fresh intermediate the caller gives up).</summary>
    public static Tensor Silu(Tensor x) => is_grad_enabled() ? nn.functional.silu(x) : x.silu_();

    /// <summary>Applies <paramref name="f"/> and disposes <paramref name="x"/> unless it is <paramref name="keep"/> (the caller's input).</summary>
    public static Tensor Then(this Tensor x, Func<Tensor, Tensor> f, Tensor keep)
    {
        var y = f(x);
        if (!ReferenceEquals(x, keep) && !ReferenceEquals(x, y)) x.Dispose();
        return y;
    }
}
