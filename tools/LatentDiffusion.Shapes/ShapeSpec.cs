namespace LatentDiffusion.Shapes;

/// <summary>The shapes of the built-in synthetic data set; each has a distinct fill ratio or balance that <see cref="ShapeJudge"/> can measure.</summary>
public enum ShapeKind
{
    /// <summary>A disc; fills about 0.785 of its bounding box.</summary>
    Circle,
    /// <summary>An axis-aligned square; fills its whole bounding box.</summary>
    Square,
    /// <summary>An isosceles triangle pointing up (base as wide as it is tall); its mass sits in the lower part of its box.</summary>
    Triangle,
    /// <summary>A square turned by 45 degrees; fills half its box, balanced about the middle.</summary>
    Diamond,
}

/// <summary>The colour words of the data set; their RGB values (<see cref="ShapePalette"/>) are far apart.</summary>
public enum ShapeColor
{
    /// <summary>Red.</summary>
    Red,
    /// <summary>Orange.</summary>
    Orange,
    /// <summary>Yellow.</summary>
    Yellow,
    /// <summary>Green.</summary>
    Green,
    /// <summary>Blue.</summary>
    Blue,
    /// <summary>Purple.</summary>
    Purple,
    /// <summary>White.</summary>
    White,
    /// <summary>Black.</summary>
    Black,
}

/// <summary>The size words of the data set.</summary>
public enum ShapeSize
{
    /// <summary>A quarter of the picture's side.</summary>
    Small,
    /// <summary>Nearly half of the picture's side.</summary>
    Large,
}

/// <summary>Where in the picture the shape sits: the middle or one of four places towards an edge.</summary>
public enum ShapePosition
{
    /// <summary>The middle of the picture.</summary>
    Center,
    /// <summary>Towards the left edge, vertically centred.</summary>
    Left,
    /// <summary>Towards the right edge, vertically centred.</summary>
    Right,
    /// <summary>Towards the top edge, horizontally centred.</summary>
    Top,
    /// <summary>Towards the bottom edge, horizontally centred.</summary>
    Bottom,
}

/// <summary>How much of a <see cref="ShapeSpec"/> a caption states.</summary>
public enum CaptionStyle
{
    /// <summary>Everything, background after a comma: "a small red circle on the left, blue background".</summary>
    Full,
    /// <summary>Everything, background as a phrase: "a small red circle on the left on a blue background".</summary>
    FullOn,
    /// <summary>No size: "a red circle on the left on a blue background".</summary>
    NoSize,
    /// <summary>No position: "a small red circle on a blue background".</summary>
    NoPosition,
    /// <summary>What a user types first, neither size nor position: "a red circle on a blue background".</summary>
    Short,
}

/// <summary>
/// One picture of the synthetic data set: a single flat-coloured shape on a flat background.
/// </summary>
/// <param name="Shape">Which shape.</param>
/// <param name="Color">The shape's colour.</param>
/// <param name="Size">The shape's size.</param>
/// <param name="Position">Where the shape sits.</param>
/// <param name="Background">The background colour; never the shape's colour.</param>
/// <param name="JitterX">Horizontal offset from the position's anchor, as a fraction of the picture's side (training pictures use up to ±0.03).</param>
/// <param name="JitterY">Vertical offset from the position's anchor, as a fraction of the picture's side.</param>
/// <param name="SizeJitter">Change of the shape's side, as a fraction of the picture's side (training pictures use up to ±0.016).</param>
public sealed record ShapeSpec(ShapeKind Shape, ShapeColor Color, ShapeSize Size, ShapePosition Position, ShapeColor Background,
    double JitterX = 0, double JitterY = 0, double SizeJitter = 0)
{
    /// <summary>The same attributes without jitter: the identity of the picture's content.</summary>
    public ShapeSpec WithoutJitter() => this with { JitterX = 0, JitterY = 0, SizeJitter = 0 };

    /// <summary>Whether the caption of <paramref name="style"/> states the size.</summary>
    public static bool StatesSize(CaptionStyle style) => style is CaptionStyle.Full or CaptionStyle.FullOn or CaptionStyle.NoPosition;

    /// <summary>Whether the caption of <paramref name="style"/> states the position.</summary>
    public static bool StatesPosition(CaptionStyle style) => style is CaptionStyle.Full or CaptionStyle.FullOn or CaptionStyle.NoSize;

    /// <summary>The caption of this picture in the given style, lower case, every word one token of <see cref="ShapesVocabulary"/>.</summary>
    public string Caption(CaptionStyle style = CaptionStyle.Full)
    {
        string color = Word(Color), shape = Word(Shape), background = Word(Background);
        string size = Word(Size), position = Phrase(Position);
        return style switch
        {
            CaptionStyle.Full => $"a {size} {color} {shape} {position}, {background} background",
            CaptionStyle.FullOn => $"a {size} {color} {shape} {position} on {Article(background)} {background} background",
            CaptionStyle.NoSize => $"{Article(color)} {color} {shape} {position} on {Article(background)} {background} background",
            CaptionStyle.NoPosition => $"a {size} {color} {shape} on {Article(background)} {background} background",
            CaptionStyle.Short => $"{Article(color)} {color} {shape} on {Article(background)} {background} background",
            _ => throw new ArgumentOutOfRangeException(nameof(style), style, "Unknown caption style."),
        };
    }

    /// <summary>The caption word of a shape ("circle").</summary>
    public static string Word(ShapeKind shape) => shape.ToString().ToLowerInvariant();

    /// <summary>The caption word of a colour ("red").</summary>
    public static string Word(ShapeColor color) => color.ToString().ToLowerInvariant();

    /// <summary>The caption word of a size ("small").</summary>
    public static string Word(ShapeSize size) => size.ToString().ToLowerInvariant();

    /// <summary>The caption phrase of a position ("on the left", "at the top", "in the center").</summary>
    public static string Phrase(ShapePosition position) => position switch
    {
        ShapePosition.Center => "in the center",
        ShapePosition.Left => "on the left",
        ShapePosition.Right => "on the right",
        ShapePosition.Top => "at the top",
        ShapePosition.Bottom => "at the bottom",
        _ => throw new ArgumentOutOfRangeException(nameof(position), position, "Unknown position."),
    };

    private static string Article(string nextWord) => nextWord[0] is 'a' or 'e' or 'i' or 'o' or 'u' ? "an" : "a";
}
