using static TorchSharp.torch;

namespace LatentDiffusion.Vae;

/// <summary>
/// The reference autoencoder's tiling scheme (<c>enable_tiling</c>), shared by encoding and decoding: the input is cut into
/// overlapping square tiles, each tile is mapped on its own, and neighbouring output tiles are blended linearly across their
/// overlap so that no seam shows where the independently normalised tiles meet.
/// </summary>
public static class VaeTiling
{
    /// <summary>
    /// Input tiles of side <paramref name="tileIn"/> start every ⌊(1 − overlap)·tileIn⌋ along height and width (the last ones
    /// smaller where the input ends). Each maps to an output tile of nominal side <paramref name="tileOut"/>. Every output tile
    /// is blended in place into its upper, then its left neighbour (both already blended, so the order matters as in the
    /// reference) over ⌊overlap·tileOut⌋ rows/columns, cropped to tileOut − ⌊overlap·tileOut⌋, and the crops are concatenated.
    /// </summary>
    /// <param name="input"><c>[batch, channels, H, W]</c>.</param>
    /// <param name="tileIn">Input tile side.</param>
    /// <param name="tileOut">Output tile side that an input tile of <paramref name="tileIn"/> maps to.</param>
    /// <param name="overlapFactor">Fraction of a tile shared with its neighbour, in [0, 1).</param>
    /// <param name="map">The per-tile computation; the returned tensor is owned (and modified) here.</param>
    /// <exception cref="ArgumentException">Non-positive tile sizes, or a tile and overlap that leave no stride between tiles.</exception>
    public static Tensor Apply(Tensor input, int tileIn, int tileOut, double overlapFactor, Func<Tensor, Tensor> map)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(map);
        if (tileIn <= 0 || tileOut <= 0)
            throw new ArgumentException($"Tile sizes must be positive (input tile {tileIn}, output tile {tileOut}).");
        if (!(overlapFactor is >= 0 and < 1))
            throw new ArgumentOutOfRangeException(nameof(overlapFactor), overlapFactor, "The overlap factor must be in [0, 1).");
        // Truncation, as the reference's int(): strides and blend widths are whole pixels.
        int stride = (int)(tileIn * (1 - overlapFactor));
        int blendExtent = (int)(tileOut * overlapFactor);
        int rowLimit = tileOut - blendExtent;
        if (stride <= 0)
            throw new ArgumentException($"A tile of {tileIn} with overlap {overlapFactor} leaves no stride between tiles; use a larger tile or a smaller overlap.");

        using var scope = NewDisposeScope();
        long height = input.shape[2], width = input.shape[3];
        var rows = new List<List<Tensor>>();
        for (long i = 0; i < height; i += stride)
        {
            var row = new List<Tensor>();
            for (long j = 0; j < width; j += stride)
            {
                using var tile = input.narrow(2, i, Math.Min(tileIn, height - i)).narrow(3, j, Math.Min(tileIn, width - j));
                row.Add(map(tile));
            }
            rows.Add(row);
        }

        var resultRows = new List<Tensor>();
        for (int i = 0; i < rows.Count; i++)
        {
            var resultRow = new List<Tensor>();
            for (int j = 0; j < rows[i].Count; j++)
            {
                var tile = rows[i][j];
                if (i > 0) Blend(rows[i - 1][j], tile, blendExtent, dim: 2);
                if (j > 0) Blend(rows[i][j - 1], tile, blendExtent, dim: 3);
                resultRow.Add(tile.narrow(2, 0, Math.Min(rowLimit, tile.shape[2])).narrow(3, 0, Math.Min(rowLimit, tile.shape[3])));
            }
            resultRows.Add(cat(resultRow.ToArray(), 3));
        }
        return cat(resultRows.ToArray(), 2).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Overwrites, in place, the first <paramref name="extent"/> rows (<paramref name="dim"/> 2) or columns (3) of
    /// <paramref name="b"/> with a linear ramp from the last ones of <paramref name="a"/>: row k becomes
    /// a[end − extent + k]·(1 − k/extent) + b[k]·(k/extent). The extent is clipped to both tensors' sizes.
    /// </summary>
    /// <param name="a">The neighbour above (dim 2) or to the left (dim 3).</param>
    /// <param name="b">The tile being blended; modified.</param>
    /// <param name="extent">Rows or columns to blend.</param>
    /// <param name="dim">2 for vertical, 3 for horizontal.</param>
    public static void Blend(Tensor a, Tensor b, int extent, int dim)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (dim is not (2 or 3)) throw new ArgumentOutOfRangeException(nameof(dim), dim, "Blend along dim 2 (rows) or 3 (columns).");
        extent = (int)Math.Min(Math.Min(a.shape[dim], b.shape[dim]), extent);
        if (extent <= 0) return;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ramp = Enumerable.Range(0, extent).Select(k => (double)k / extent).ToArray();
        var shape = dim == 2 ? new long[] { 1, 1, extent, 1 } : new long[] { 1, 1, 1, extent };
        var weightB = tensor(ramp).to(b.dtype, b.device).view(shape);
        var weightA = tensor(ramp.Select(r => 1 - r).ToArray()).to(b.dtype, b.device).view(shape);
        var head = b.narrow(dim, 0, extent);
        var tail = a.narrow(dim, a.shape[dim] - extent, extent);
        head.copy_(tail * weightA + head * weightB);
    }
}
