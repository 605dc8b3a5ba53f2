using LatentDiffusion.Formats;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Loading;

/// <summary>The bit-level finiteness check agrees with libtorch's isfinite for every dtype it reads, wherever the bad value sits.</summary>
public class FiniteBitsTests
{
    private static readonly ScalarType[] DTypes = [ScalarType.Float32, ScalarType.Float16, ScalarType.BFloat16, ScalarType.Float64];

    // Lengths below, at and past a SIMD vector, and with a scalar tail; positions at the start, the middle and the last element.
    [Test]
    public void AgreesWithIsfinite([ValueSource(nameof(DTypes))] ScalarType dtype, [Values(1, 7, 64, 1001)] int length,
        [Values(float.NaN, float.PositiveInfinity, float.NegativeInfinity, 65504f, -1e-8f)] float bad)
    {
        foreach (int at in new[] { 0, length / 2, length - 1 }.Distinct())
        {
            using var values = (linspace(-3, 3, length) * 1000).to(dtype);
            values[at] = bad;
            using var expected = isfinite(values).all();
            bool actual = FiniteBits.AllFinite(LatentDiffusion.Runtime.TorchRuntime.DataPointer(values), length, dtype);
            Assert.That(actual, Is.EqualTo(expected.item<bool>()), $"{dtype}, {length} values, {bad} at {at}");
        }
    }

    [Test]
    public void OtherDtypesAreNotRead()
    {
        Assert.That(FiniteBits.Supports(ScalarType.Int64), Is.False);
        Assert.That(FiniteBits.Supports(ScalarType.Float16), Is.True);
    }
}
