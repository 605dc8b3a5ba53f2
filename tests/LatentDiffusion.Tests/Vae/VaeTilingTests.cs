using LatentDiffusion.Vae;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Vae;

/// <summary>
/// The tiling geometry on its own: with a map that has no per-tile statistics (nearest 8x upsampling), overlapping tiles agree
/// wherever they overlap, so blending and cropping must reproduce the untiled result exactly, also at ragged edges.
/// </summary>
public sealed class VaeTilingTests
{
    private static Tensor Upsample8(Tensor x) => x.repeat_interleave(8, 2).repeat_interleave(8, 3);

    [TestCase(32, 32, 16, 0.25)]
    [TestCase(20, 27, 16, 0.25)]
    [TestCase(17, 40, 8, 0.5)]
    [TestCase(9, 9, 16, 0.25)]
    [TestCase(24, 24, 8, 0.0)]
    public void TilesReassembleAPositionIndependentMapExactly(int h, int w, int tile, double overlap)
    {
        using var scope = NewDisposeScope();
        var input = randn([2, 3, h, w], generator: new Generator(7));
        var tiled = VaeTiling.Apply(input, tile, tile * 8, overlap, Upsample8);
        AssertTensor.MaxAbsClose(tiled, Upsample8(input), 1e-6, $"{h}x{w} in tiles of {tile}, overlap {overlap}");
    }

    [Test]
    public void BlendIsALinearRampFromTheNeighbour()
    {
        using var scope = NewDisposeScope();
        var above = ones(1, 1, 6, 2);
        var tile = zeros(1, 1, 5, 2);
        VaeTiling.Blend(above, tile, 4, dim: 2);
        var expected = tensor(new float[] { 1f, 0.75f, 0.5f, 0.25f, 0f }).view(1, 1, 5, 1).expand(1, 1, 5, 2);
        AssertTensor.MaxAbsClose(tile, expected, 0, "vertical blend");

        var left = full([1, 1, 2, 3], 2f);
        var right = zeros(1, 1, 2, 4);
        VaeTiling.Blend(left, right, 8, dim: 3); // clipped to the narrower tensor: 3 columns
        var expectedH = tensor(new float[] { 2f, 2f * 2 / 3, 2f / 3, 0f }).view(1, 1, 1, 4).expand(1, 1, 2, 4);
        AssertTensor.MaxAbsClose(right, expectedH, 1e-6, "horizontal blend");
    }
}
