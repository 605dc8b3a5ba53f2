using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Shapes;

/// <summary>One training example: what is drawn and how it is described.</summary>
/// <param name="Spec">The picture's content, jitter included.</param>
/// <param name="Style">How much of the content the caption states.</param>
/// <param name="Caption">The caption text.</param>
public sealed record ShapeSample(ShapeSpec Spec, CaptionStyle Style, string Caption);

/// <summary>One held-out evaluation case: a prompt to generate from, the generation seed, and the content the judge expects.</summary>
/// <param name="Index">Position in <see cref="ShapesDataset.EvaluationCases"/> (0 to 199).</param>
/// <param name="Spec">The expected content (no jitter); size and position only count where <see cref="Style"/> states them.</param>
/// <param name="Style">How much of the content the prompt states.</param>
/// <param name="Prompt">The prompt text.</param>
/// <param name="Seed">The seed to generate the picture with.</param>
public sealed record EvalCase(int Index, ShapeSpec Spec, CaptionStyle Style, string Prompt, int Seed);

/// <summary>A batch of rendered training pictures with their captions. Disposing it disposes <see cref="Images"/>.</summary>
public sealed class ShapeBatch : IDisposable
{
    /// <summary>Creates a batch.</summary>
    public ShapeBatch(Tensor images, string[] captions, ShapeSample[] samples)
    {
        Images = images;
        Captions = captions;
        Samples = samples;
    }

    /// <summary>The pictures, float32 [B, 3, S, S] in [-1, 1].</summary>
    public Tensor Images { get; }

    /// <summary>The captions, one per picture.</summary>
    public string[] Captions { get; }

    /// <summary>What each picture shows and how its caption was made.</summary>
    public ShapeSample[] Samples { get; }

    /// <summary>Deconstructs into (images, captions, specs).</summary>
    public void Deconstruct(out Tensor images, out string[] captions, out ShapeSpec[] specs)
    {
        images = Images;
        captions = Captions;
        specs = [.. Samples.Select(s => s.Spec)];
    }

    /// <inheritdoc />
    public void Dispose() => Images.Dispose();
}

/// <summary>
/// The deterministic synthetic data set of the built-in text-to-image model: one flat-coloured shape (4 kinds, 8 colours,
/// 2 sizes, 5 positions) on a flat background of another colour, with captions in five styles from
/// "a small red circle on the left, blue background" down to "a red circle on a blue background".
/// </summary>
/// <remarks>
/// <para>Everything is drawn from <see cref="System.Random"/> seeded by a hash of (seed, index), never from TorchSharp's
/// generator, so a stream is the same on every machine and device.</para>
/// <para>Held-out split: of the 4×8×2×5×7 = 2,240 distinct contents (shape, colour, size, position, background), those whose
/// stable hash falls in one tenth (<see cref="IsHeldOut"/>) are never drawn for training; <see cref="EvaluationCases"/>
/// prompts exactly these contents, so evaluation measures unseen combinations of seen words. Every (shape, colour,
/// background) triple keeps training contents in other sizes and positions.</para>
/// </remarks>
public static class ShapesDataset
{
    /// <summary>The picture side the model is trained at.</summary>
    public const int DefaultImageSize = 64;

    /// <summary>The number of held-out evaluation cases.</summary>
    public const int EvaluationCaseCount = 200;

    /// <summary>The first generation seed of the evaluation cases; case i uses this plus i.</summary>
    public const int EvaluationSeedBase = 1_000_000;

    /// <summary>Shape side of <see cref="ShapeSize.Small"/> as a fraction of the picture side (16 px at 64).</summary>
    public const double SmallSide = 0.25;

    /// <summary>Shape side of <see cref="ShapeSize.Large"/> as a fraction of the picture side (30 px at 64).</summary>
    public const double LargeSide = 0.47;

    /// <summary>Largest positional jitter of training pictures, as a fraction of the side (2 px at 64).</summary>
    public const double MaxPositionJitter = 0.03;

    /// <summary>Largest size jitter of training pictures, as a fraction of the side (1 px at 64).</summary>
    public const double MaxSizeJitter = 0.016;

    private const int Supersampling = 4;

    private static readonly (CaptionStyle Style, int Weight)[] StyleWeights =
        [(CaptionStyle.Full, 30), (CaptionStyle.FullOn, 20), (CaptionStyle.NoSize, 15), (CaptionStyle.NoPosition, 15), (CaptionStyle.Short, 20)];

    /// <summary>The centre of a position as fractions (x, y) of the picture side.</summary>
    public static (double X, double Y) Anchor(ShapePosition position) => position switch
    {
        ShapePosition.Center => (0.5, 0.5),
        ShapePosition.Left => (0.28, 0.5),
        ShapePosition.Right => (0.72, 0.5),
        ShapePosition.Top => (0.5, 0.28),
        ShapePosition.Bottom => (0.5, 0.72),
        _ => throw new ArgumentOutOfRangeException(nameof(position), position, "Unknown position."),
    };

    /// <summary>The nominal side of a size as a fraction of the picture side.</summary>
    public static double Side(ShapeSize size) => size == ShapeSize.Small ? SmallSide : LargeSide;

    /// <summary>Every distinct content (no jitter) in a fixed order.</summary>
    public static IEnumerable<ShapeSpec> AllContents()
    {
        foreach (var shape in Enum.GetValues<ShapeKind>())
            foreach (var color in Enum.GetValues<ShapeColor>())
                foreach (var size in Enum.GetValues<ShapeSize>())
                    foreach (var position in Enum.GetValues<ShapePosition>())
                        foreach (var background in Enum.GetValues<ShapeColor>())
                            if (background != color)
                                yield return new ShapeSpec(shape, color, size, position, background);
    }

    /// <summary>Whether a content belongs to the held-out evaluation split (jitter is ignored).</summary>
    public static bool IsHeldOut(ShapeSpec spec) => ContentHash(spec) % 10 == 0;

    /// <summary>
    /// The training example number <paramref name="index"/> of the stream <paramref name="seed"/>: uniform shape, colour,
    /// size, position and background (≠ colour), never a held-out content, with jitter and a caption style drawn by weight
    /// (Full 30%, FullOn 20%, NoSize 15%, NoPosition 15%, Short 20%).
    /// </summary>
    public static ShapeSample Sample(int seed, int index)
    {
        var rng = new Random(Mix(seed, index));
        ShapeSpec spec;
        do
        {
            var color = (ShapeColor)rng.Next(8);
            var background = (ShapeColor)rng.Next(7);
            if (background >= color) background++;
            spec = new ShapeSpec((ShapeKind)rng.Next(4), color, (ShapeSize)rng.Next(2), (ShapePosition)rng.Next(5), background);
        }
        while (IsHeldOut(spec));
        spec = spec with
        {
            JitterX = (rng.NextDouble() * 2 - 1) * MaxPositionJitter,
            JitterY = (rng.NextDouble() * 2 - 1) * MaxPositionJitter,
            SizeJitter = (rng.NextDouble() * 2 - 1) * MaxSizeJitter,
        };
        int pick = rng.Next(100);
        var style = CaptionStyle.Full;
        foreach (var (s, w) in StyleWeights)
        {
            if (pick < w) { style = s; break; }
            pick -= w;
        }
        return new ShapeSample(spec, style, spec.Caption(style));
    }

    /// <summary>
    /// The training batch number <paramref name="step"/> of the stream <paramref name="seed"/>: examples
    /// <c>step * batchSize</c> to <c>step * batchSize + batchSize - 1</c>, rendered to float32 [B, 3, S, S] in [-1, 1].
    /// </summary>
    public static ShapeBatch Batch(int seed, int step, int batchSize, int imageSize = DefaultImageSize, Device? device = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        var samples = new ShapeSample[batchSize];
        int plane = 3 * imageSize * imageSize;
        var data = new float[batchSize * plane];
        for (int i = 0; i < batchSize; i++)
        {
            samples[i] = Sample(seed, checked(step * batchSize + i));
            var pixels = RenderPlanes(samples[i].Spec, imageSize);
            for (int k = 0; k < plane; k++) data[i * plane + k] = pixels[k] * 2f - 1f;
        }
        var images = torch.tensor(data, [batchSize, 3, imageSize, imageSize], ScalarType.Float32);
        if (device is not null && device.type != DeviceType.CPU)
        {
            var moved = images.to(device);
            images.Dispose();
            images = moved;
        }
        return new ShapeBatch(images, [.. samples.Select(s => s.Caption)], samples);
    }

    /// <summary>The 200 held-out evaluation cases (see the class remarks); the same list on every call.</summary>
    public static IReadOnlyList<EvalCase> EvaluationCases { get; } = BuildEvaluationCases();

    /// <summary>Renders a picture to a float32 CPU tensor [3, S, S] in [-1, 1].</summary>
    public static Tensor Render(ShapeSpec spec, int size = DefaultImageSize)
    {
        var pixels = RenderPlanes(spec, size);
        for (int k = 0; k < pixels.Length; k++) pixels[k] = pixels[k] * 2f - 1f;
        return torch.tensor(pixels, [3, size, size], ScalarType.Float32);
    }

    /// <summary>Renders a picture to an 8-bit RGB image.</summary>
    public static Image<Rgb24> RenderImage(ShapeSpec spec, int size = DefaultImageSize) => ToImage(RenderPlanes(spec, size), size, size);

    /// <summary>
    /// Renders a picture to channel planes (R, G, B; row-major) in [0, 1]: flat colours, edges anti-aliased by 4×4 supersampling.
    /// </summary>
    public static float[] RenderPlanes(ShapeSpec spec, int size = DefaultImageSize)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentOutOfRangeException.ThrowIfLessThan(size, 8);
        if (spec.Color == spec.Background) throw new ArgumentException($"The shape and the background are both {spec.Color}.", nameof(spec));
        var (ax, ay) = Anchor(spec.Position);
        double cx = (ax + spec.JitterX) * size, cy = (ay + spec.JitterY) * size;
        double r = (Side(spec.Size) + spec.SizeJitter) * size / 2;
        var fg = ShapePalette.Rgb01(spec.Color);
        var bg = ShapePalette.Rgb01(spec.Background);
        int n = size * size;
        var planes = new float[3 * n];
        const int ss = Supersampling;
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++)
            {
                int inside = 0;
                // Only pixels near the shape's box can be covered; the rest is background.
                if (x + 1 >= cx - r && x <= cx + r && y + 1 >= cy - r && y <= cy + r)
                    for (int j = 0; j < ss; j++)
                        for (int i = 0; i < ss; i++)
                            if (Inside(spec.Shape, x + (i + 0.5) / ss - cx, y + (j + 0.5) / ss - cy, r)) inside++;
                float c = inside / (float)(ss * ss);
                int p = y * size + x;
                planes[p] = bg.R + (fg.R - bg.R) * c;
                planes[n + p] = bg.G + (fg.G - bg.G) * c;
                planes[2 * n + p] = bg.B + (fg.B - bg.B) * c;
            }
        return planes;
    }

    /// <summary>Converts channel planes in [0, 1] to an 8-bit RGB image (values are clamped and rounded).</summary>
    public static Image<Rgb24> ToImage(float[] planes, int width, int height)
    {
        ArgumentNullException.ThrowIfNull(planes);
        int n = width * height;
        if (planes.Length != 3 * n) throw new ArgumentException($"Expected {3 * n} values for {width}x{height} RGB planes, got {planes.Length}.", nameof(planes));
        var bytes = new byte[3 * n];
        for (int p = 0; p < n; p++)
            for (int ch = 0; ch < 3; ch++)
                bytes[3 * p + ch] = (byte)Math.Round(Math.Clamp(planes[ch * n + p], 0f, 1f) * 255f);
        return Image.LoadPixelData<Rgb24>(bytes, width, height);
    }

    internal static bool Inside(ShapeKind shape, double dx, double dy, double r) => shape switch
    {
        ShapeKind.Circle => dx * dx + dy * dy <= r * r,
        ShapeKind.Square => Math.Abs(dx) <= r && Math.Abs(dy) <= r,
        ShapeKind.Diamond => Math.Abs(dx) + Math.Abs(dy) <= r,
        // Apex at the top (dy = -r), base at the bottom as wide as the triangle is tall.
        ShapeKind.Triangle => dy >= -r && dy <= r && Math.Abs(dx) <= (dy + r) / 2,
        _ => throw new ArgumentOutOfRangeException(nameof(shape), shape, "Unknown shape."),
    };

    private static List<EvalCase> BuildEvaluationCases()
    {
        // Held-out contents in a scrambled but fixed order, so that the first 200 spread over all words.
        var held = AllContents().Where(IsHeldOut).OrderBy(s => Mix(unchecked((int)ContentHash(s)), 7)).ThenBy(ContentHash).ToList();
        CaptionStyle[] styles = [CaptionStyle.Full, CaptionStyle.FullOn, CaptionStyle.NoSize, CaptionStyle.NoPosition, CaptionStyle.Short];
        var cases = new List<EvalCase>(EvaluationCaseCount);
        for (int i = 0; i < EvaluationCaseCount; i++)
        {
            var spec = held[i % held.Count];
            var style = styles[i % styles.Length];
            cases.Add(new EvalCase(i, spec, style, spec.Caption(style), EvaluationSeedBase + i));
        }
        return cases;
    }

    /// <summary>A hash of the content that does not change between runs or .NET versions (unlike string.GetHashCode).</summary>
    private static uint ContentHash(ShapeSpec spec)
    {
        ulong key = (ulong)spec.Shape | (ulong)spec.Color << 8 | (ulong)spec.Size << 16 | (ulong)spec.Position << 24 | (ulong)spec.Background << 32;
        return (uint)(SplitMix(key ^ 0x5348415045534554UL) >> 32);
    }

    private static int Mix(int seed, int index) => (int)(SplitMix((ulong)(uint)seed << 32 | (uint)index) & 0x7FFFFFFF);

    private static ulong SplitMix(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
