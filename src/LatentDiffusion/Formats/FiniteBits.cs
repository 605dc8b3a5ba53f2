using System.Numerics;
using static TorchSharp.torch;

namespace LatentDiffusion.Formats;

/// <summary>
/// Whether floating-point values in host memory are all finite, read from their bits (an all-ones exponent is NaN or
/// infinity) with SIMD compares: no tensor is allocated and nothing is converted, so checking a model's weights as they
/// are loaded costs one pass over memory that is already in cache.
/// </summary>
internal static class FiniteBits
{
    /// <summary>True when the dtype is one this class reads (float64, float32, float16, bfloat16).</summary>
    public static bool Supports(ScalarType dtype) => dtype is ScalarType.Float64 or ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16;

    /// <summary>True when none of the <paramref name="count"/> values at <paramref name="data"/> is NaN or infinite.</summary>
    public static unsafe bool AllFinite(void* data, long count, ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => NoneAllOnes((uint*)data, count, 0x7F80_0000u),
        ScalarType.Float16 => NoneAllOnes((ushort*)data, count, (ushort)0x7C00),
        ScalarType.BFloat16 => NoneAllOnes((ushort*)data, count, (ushort)0x7F80),
        ScalarType.Float64 => NoneAllOnes((ulong*)data, count, 0x7FF0_0000_0000_0000ul),
        _ => throw new ArgumentException($"{dtype} is not a floating-point dtype that FiniteBits reads.", nameof(dtype)),
    };

    /// <summary>As <see cref="AllFinite(void*, long, ScalarType)"/>, for an address held as an <see cref="IntPtr"/>.</summary>
    public static unsafe bool AllFinite(IntPtr data, long count, ScalarType dtype) => AllFinite((void*)data, count, dtype);

    // True when no value has every bit of the exponent mask set.
    private static unsafe bool NoneAllOnes<T>(T* data, long count, T exponent) where T : unmanaged, IBinaryInteger<T>
    {
        long i = 0;
        if (Vector.IsHardwareAccelerated && count >= Vector<T>.Count)
        {
            var mask = new Vector<T>(exponent);
            for (; i <= count - Vector<T>.Count; i += Vector<T>.Count)
            {
                var v = Vector.Load(data + i) & mask;
                if (Vector.EqualsAny(v, mask)) return false;
            }
        }
        for (; i < count; i++)
            if ((data[i] & exponent) == exponent) return false;
        return true;
    }
}
