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
    /// <summary>
    /// Where tiles disagree (here each tile maps to its own constant), the result depends on the blend ramps and on the
    /// reference's order of in-place updates: a tile is blended with its upper neighbour as that neighbour was after its own
    /// blending. Compared with an element-by-element transcription of the reference's loops.
    /// </summary>
    [TestCase(10, 10, 4, 0.5)]
    [TestCase(11, 7, 4, 0.25)]
    [TestCase(9, 13, 6, 0.5)]
    public void DisagreeingTilesAreBlendedAsTheReferenceDoes(int h, int w, int tile, double overlap)
    {
        using var scope = NewDisposeScope();
        var input = arange(h * w, dtype: ScalarType.Float64).view(1, 1, h, w);
        Tensor PerTileConstant(Tensor t) => full_like(t, t.mean().item<double>() + t.shape[2] * 100 + t.shape[3] * 1000);
        var actual = VaeTiling.Apply(input, tile, tile, overlap, PerTileConstant);
        AssertTensor.MaxAbsClose(actual, ReferenceLoops(input, tile, overlap, PerTileConstant), 1e-9, $"{h}x{w}, tile {tile}, overlap {overlap}");
    }

    // The reference's tiled loop with its per-row and per-column blend loops, on plain arrays (output tile = input tile size).
    private static Tensor ReferenceLoops(Tensor input, int tileSize, double overlap, Func<Tensor, Tensor> map)
    {
        int h = (int)input.shape[2], w = (int)input.shape[3];
        int stride = (int)(tileSize * (1 - overlap)), blend = (int)(tileSize * overlap), limit = tileSize - blend;
        var rows = new List<List<double[,]>>();
        for (int i = 0; i < h; i += stride)
        {
            var row = new List<double[,]>();
            for (int j = 0; j < w; j += stride)
            {
                int th = Math.Min(tileSize, h - i), tw = Math.Min(tileSize, w - j);
                using var mapped = map(input.narrow(2, i, th).narrow(3, j, tw));
                var t = new double[th, tw];
                for (int y = 0; y < th; y++) for (int x = 0; x < tw; x++) t[y, x] = mapped[0, 0, y, x].item<double>();
                row.Add(t);
            }
            rows.Add(row);
        }
        var result = new double[h, w];
        int oy = 0;
        for (int i = 0; i < rows.Count; i++)
        {
            int ox = 0, rowHeight = 0;
            for (int j = 0; j < rows[i].Count; j++)
            {
                var b = rows[i][j];
                if (i > 0)
                {
                    var a = rows[i - 1][j];
                    int e = Math.Min(Math.Min(a.GetLength(0), b.GetLength(0)), blend);
                    for (int y = 0; y < e; y++)
                        for (int x = 0; x < b.GetLength(1); x++)
                            b[y, x] = a[a.GetLength(0) - e + y, x] * (1 - (double)y / e) + b[y, x] * ((double)y / e);
                }
                if (j > 0)
                {
                    var a = rows[i][j - 1];
                    int e = Math.Min(Math.Min(a.GetLength(1), b.GetLength(1)), blend);
                    for (int x = 0; x < e; x++)
                        for (int y = 0; y < b.GetLength(0); y++)
                            b[y, x] = a[y, a.GetLength(1) - e + x] * (1 - (double)x / e) + b[y, x] * ((double)x / e);
                }
                int ch = Math.Min(limit, b.GetLength(0)), cw = Math.Min(limit, b.GetLength(1));
                for (int y = 0; y < ch; y++) for (int x = 0; x < cw; x++) result[oy + y, ox + x] = b[y, x];
                ox += cw;
                rowHeight = ch;
            }
            Assert.That(ox, Is.EqualTo(w), "reference transcription: row width");
            oy += rowHeight;
        }
        Assert.That(oy, Is.EqualTo(h), "reference transcription: height");
        return tensor(result).view(1, 1, h, w);
    }
}
