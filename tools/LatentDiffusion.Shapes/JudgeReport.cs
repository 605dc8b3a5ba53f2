using System.Globalization;
using System.Text;

namespace LatentDiffusion.Shapes;

/// <summary>One judged picture: what was asked for, how much of it the prompt stated, and what the judge saw.</summary>
/// <param name="Spec">The content asked for.</param>
/// <param name="Style">The caption style of the prompt; size and position are only scored where it states them.</param>
/// <param name="Verdict">The judge's verdict on the picture.</param>
public sealed record JudgedSample(ShapeSpec Spec, CaptionStyle Style, JudgeVerdict Verdict);

/// <summary>Correct answers out of scored pictures for one attribute.</summary>
/// <param name="Correct">Pictures where the judge saw what was asked for.</param>
/// <param name="Total">Pictures where the attribute was scored.</param>
public readonly record struct AttributeAccuracy(int Correct, int Total)
{
    /// <summary>Correct / Total, or NaN when nothing was scored.</summary>
    public double Accuracy => Total == 0 ? double.NaN : Correct / (double)Total;

    /// <inheritdoc />
    public override string ToString() => Total == 0 ? "n/a" : string.Create(CultureInfo.InvariantCulture, $"{Accuracy * 100:F1}% ({Correct}/{Total})");
}

/// <summary>Per-attribute accuracy of a set of judged pictures.</summary>
/// <param name="Shape">Shape kind.</param>
/// <param name="Color">Shape colour.</param>
/// <param name="Background">Background colour.</param>
/// <param name="Size">Size, over the pictures whose prompt states it.</param>
/// <param name="Position">Position, over the pictures whose prompt states it.</param>
/// <param name="All">Pictures where every stated attribute is right.</param>
public sealed record JudgeReport(AttributeAccuracy Shape, AttributeAccuracy Color, AttributeAccuracy Background,
    AttributeAccuracy Size, AttributeAccuracy Position, AttributeAccuracy All)
{
    private int[,] _positionConfusion = new int[Positions, Positions + 1];

    private static readonly int Positions = Enum.GetValues<ShapePosition>().Length;

    /// <summary>
    /// How many pictures whose prompt states <paramref name="asked"/> the judge placed at <paramref name="seen"/>
    /// (null: no shape found). The table tells a model that ignores the position word from one that knows the axis
    /// ("on the left" or "on the right") but not the side. Filled by <see cref="Compute(IEnumerable{JudgedSample})"/>; a report
    /// made with the constructor has an empty table.
    /// </summary>
    public int PositionConfusion(ShapePosition asked, ShapePosition? seen) => _positionConfusion[(int)asked, seen is { } s ? (int)s : Positions];

    /// <summary>Scores pictures whose prompts state everything (size and position always scored).</summary>
    public static JudgeReport Compute(IEnumerable<(ShapeSpec Spec, JudgeVerdict Verdict)> judged)
    {
        ArgumentNullException.ThrowIfNull(judged);
        return Compute(judged.Select(j => new JudgedSample(j.Spec, CaptionStyle.Full, j.Verdict)));
    }

    /// <summary>Scores pictures; size and position count only where the sample's caption style states them.</summary>
    public static JudgeReport Compute(IEnumerable<JudgedSample> judged)
    {
        ArgumentNullException.ThrowIfNull(judged);
        int n = 0, shape = 0, color = 0, background = 0, sizeN = 0, size = 0, positionN = 0, position = 0, all = 0;
        var confusion = new int[Positions, Positions + 1];
        foreach (var (spec, style, v) in judged)
        {
            n++;
            bool s = v.Shape == spec.Shape, c = v.Color == spec.Color, b = v.Background == spec.Background;
            bool statesSize = ShapeSpec.StatesSize(style), statesPosition = ShapeSpec.StatesPosition(style);
            bool z = v.Size == spec.Size, p = v.Position == spec.Position;
            if (s) shape++;
            if (c) color++;
            if (b) background++;
            if (statesSize) { sizeN++; if (z) size++; }
            if (statesPosition)
            {
                positionN++;
                if (p) position++;
                confusion[(int)spec.Position, v.Position is { } seen ? (int)seen : Positions]++;
            }
            if (s && c && b && (!statesSize || z) && (!statesPosition || p)) all++;
        }
        return new JudgeReport(new(shape, n), new(color, n), new(background, n), new(size, sizeN), new(position, positionN), new(all, n))
        {
            _positionConfusion = confusion,
        };
    }

    /// <summary>The report as a two-column markdown table.</summary>
    public string ToMarkdown()
    {
        var sb = new StringBuilder("| attribute | accuracy |\n|---|---|\n");
        foreach (var (name, a) in new[] { ("shape", Shape), ("colour", Color), ("background", Background), ("size", Size), ("position", Position), ("all stated", All) })
            sb.Append("| ").Append(name).Append(" | ").Append(a).Append(" |\n");
        return sb.ToString();
    }

    /// <summary>Equal when every accuracy and every cell of the position confusion table are equal.</summary>
    public bool Equals(JudgeReport? other) => other is not null && (Shape, Color, Background, Size, Position, All) == (other.Shape, other.Color, other.Background, other.Size, other.Position, other.All)
        && _positionConfusion.Cast<int>().SequenceEqual(other._positionConfusion.Cast<int>());

    /// <inheritdoc />
    public override int GetHashCode() => HashCode.Combine(Shape, Color, Background, Size, Position, All);

    /// <summary>The position confusion table as markdown: one row per stated position, one column per position the judge saw.</summary>
    public string PositionConfusionMarkdown()
    {
        var positions = Enum.GetValues<ShapePosition>();
        var sb = new StringBuilder("| asked \\ seen |");
        foreach (var p in positions) sb.Append(' ').Append(p.ToString().ToLowerInvariant()).Append(" |");
        sb.Append(" none |\n|---|").Append(string.Concat(Enumerable.Repeat("---|", positions.Length + 1))).Append('\n');
        foreach (var asked in positions)
        {
            sb.Append("| ").Append(asked.ToString().ToLowerInvariant()).Append(" |");
            foreach (var seen in positions) sb.Append(' ').Append(PositionConfusion(asked, seen)).Append(" |");
            sb.Append(' ').Append(PositionConfusion(asked, null)).Append(" |\n");
        }
        return sb.ToString();
    }
}
