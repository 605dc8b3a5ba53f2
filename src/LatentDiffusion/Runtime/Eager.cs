using static TorchSharp.torch;

namespace LatentDiffusion.Runtime;

/// <summary>
/// Releases intermediates the moment they are consumed, as reference counting does in the reference: a dispose scope
/// around a whole decoder would keep every block's output alive to the end, which at 512x512 costs gigabytes.
/// </summary>
internal static class Eager
{
    /// <summary>SiLU, in place when no gradient is recorded (the input is a fresh intermediate the caller gives up).</summary>
    public static Tensor Silu(Tensor x) => is_grad_enabled() ? nn.functional.silu(x) : x.silu_();

    /// <summary>Applies <paramref name="f"/> to <paramref name="x"/>, then frees <paramref name="x"/> unless <paramref name="f"/> returned it.</summary>
    public static Tensor Consume(this Tensor x, Func<Tensor, Tensor> f)
    {
        var y = f(x);
        if (!ReferenceEquals(x, y)) x.Dispose();
        return y;
    }

    /// <summary>Frees <paramref name="old"/> (unless it is <paramref name="next"/>) and returns <paramref name="next"/>: a running value replaced by its successor.</summary>
    public static Tensor Replace(Tensor old, Tensor next)
    {
        if (!ReferenceEquals(old, next)) old.Dispose();
        return next;
    }

    /// <summary>Applies <paramref name="f"/> and disposes <paramref name="x"/> unless it is <paramref name="keep"/> (the caller's input).</summary>
    public static Tensor Then(this Tensor x, Func<Tensor, Tensor> f, Tensor keep)
    {
        var y = f(x);
        if (!ReferenceEquals(x, keep) && !ReferenceEquals(x, y)) x.Dispose();
        return y;
    }
}
