namespace LatentDiffusion.Shapes;

/// <summary>
/// The exact RGB values of the colour words. They were picked at least 90 (of 255) apart in RGB so that a blurry or noisy
/// picture still lands on the right word; the closest pair is orange and yellow.
/// </summary>
public static class ShapePalette
{
    private static readonly (byte R, byte G, byte B)[] Values =
    [
        (230, 25, 25),   // red
        (255, 140, 0),   // orange
        (255, 230, 0),   // yellow
        (20, 160, 40),   // green
        (25, 60, 230),   // blue
        (140, 30, 180),  // purple
        (250, 250, 250), // white
        (15, 15, 15),    // black
    ];

    /// <summary>All colours in enum order.</summary>
    public static IReadOnlyList<ShapeColor> All { get; } = Enum.GetValues<ShapeColor>();

    /// <summary>The colour's RGB bytes.</summary>
    public static (byte R, byte G, byte B) Rgb(ShapeColor color) => Values[(int)color];

    /// <summary>The colour's RGB in [0, 1].</summary>
    public static (float R, float G, float B) Rgb01(ShapeColor color)
    {
        var (r, g, b) = Values[(int)color];
        return (r / 255f, g / 255f, b / 255f);
    }

    /// <summary>The palette colour nearest (Euclidean in RGB) to an RGB value in [0, 1], and the distances to it and to the runner-up.</summary>
    public static (ShapeColor Color, double Distance, double RunnerUpDistance) Nearest(double r, double g, double b)
    {
        ShapeColor best = ShapeColor.Red;
        double d1 = double.MaxValue, d2 = double.MaxValue;
        foreach (var c in All)
        {
            var (pr, pg, pb) = Rgb01(c);
            double d = Math.Sqrt((r - pr) * (r - pr) + (g - pg) * (g - pg) + (b - pb) * (b - pb));
            if (d < d1) { d2 = d1; d1 = d; best = c; }
            else if (d < d2) d2 = d;
        }
        return (best, d1, d2);
    }
}
