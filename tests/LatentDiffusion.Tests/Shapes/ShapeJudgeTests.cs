using LatentDiffusion.Shapes;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;

namespace LatentDiffusion.Tests.Shapes;

public sealed class ShapeJudgeTests
{
    private static IEnumerable<ShapeSample> Samples(int count) => Enumerable.Range(0, count).Select(i => ShapesDataset.Sample(2024, i));

    private static JudgeReport JudgeAll(int count, double noiseStd, out List<string> failures, int blurRadius = 0)
    {
        var judged = new List<(ShapeSpec, JudgeVerdict)>();
        failures = [];
        var noise = new Random(99);
        foreach (var sample in Samples(count))
        {
            var planes = ShapesDataset.RenderPlanes(sample.Spec);
            if (blurRadius > 0) planes = BoxBlur(planes, 64, blurRadius);
            if (noiseStd > 0)
                for (int k = 0; k < planes.Length; k++)
                {
                    // Box-Muller from System.Random so the test is the same everywhere.
                    double g = Math.Sqrt(-2 * Math.Log(1 - noise.NextDouble())) * Math.Cos(2 * Math.PI * noise.NextDouble());
                    planes[k] = Math.Clamp(planes[k] + (float)(g * noiseStd), 0f, 1f);
                }
            var v = ShapeJudge.Judge(planes, 64, 64);
            judged.Add((sample.Spec, v));
            if (v.Shape != sample.Spec.Shape || v.Color != sample.Spec.Color || v.Position != sample.Spec.Position || v.Size != sample.Spec.Size || v.Background != sample.Spec.Background)
                failures.Add($"{sample.Spec} -> {v}");
        }
        return JudgeReport.Compute(judged);
    }

    /// <summary>A (2r+1)² box blur per channel, edges clamped: a stand-in for a model's soft edges.</summary>
    private static float[] BoxBlur(float[] planes, int size, int r)
    {
        var result = new float[planes.Length];
        int n = size * size;
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < size; y++)
                for (int x = 0; x < size; x++)
                {
                    float sum = 0;
                    for (int dy = -r; dy <= r; dy++)
                        for (int dx = -r; dx <= r; dx++)
                            sum += planes[c * n + Math.Clamp(y + dy, 0, size - 1) * size + Math.Clamp(x + dx, 0, size - 1)];
                    result[c * n + y * size + x] = sum / ((2 * r + 1) * (2 * r + 1));
                }
        return result;
    }

    private static void AssertAtLeast(JudgeReport r, double min, List<string> failures)
    {
        string detail = r.ToMarkdown() + string.Join("\n", failures.Take(10));
        foreach (var a in new[] { r.Shape, r.Color, r.Background, r.Size, r.Position })
            Assert.That(a.Accuracy, Is.GreaterThanOrEqualTo(min), detail);
    }

    [Test]
    public void CleanPicturesAreReadRight()
    {
        var report = JudgeAll(300, 0, out var failures);
        TestContext.Out.WriteLine(report.ToMarkdown());
        AssertAtLeast(report, 0.99, failures);
    }

    /// <summary>Noise std 0.05 on the [0, 1] pixel scale (about 13 of 255), clamped, as a stand-in for sampler noise.</summary>
    [Test]
    public void NoisyPicturesAreReadRight()
    {
        var report = JudgeAll(300, 0.05, out var failures);
        TestContext.Out.WriteLine(report.ToMarkdown());
        AssertAtLeast(report, 0.95, failures);
    }

    [Test]
    public void BlurredNoisierPicturesAreStillReadRight()
    {
        // Headroom for real model outputs: soft 5x5-box edges plus twice the noise.
        var report = JudgeAll(300, 0.1, out var failures, blurRadius: 2);
        TestContext.Out.WriteLine(report.ToMarkdown());
        TestContext.Out.WriteLine(string.Join("\n", failures.Take(20)));
        AssertAtLeast(report, 0.95, failures);
    }

    [Test]
    public void EveryContentIsReadRightWithoutJitter()
    {
        var wrong = ShapesDataset.AllContents()
            .Select(s => (s, v: ShapeJudge.Judge(ShapesDataset.RenderPlanes(s), 64, 64)))
            .Where(x => x.v.Shape != x.s.Shape || x.v.Color != x.s.Color || x.v.Position != x.s.Position || x.v.Size != x.s.Size || x.v.Background != x.s.Background)
            .Select(x => $"{x.s} -> {x.v}").ToList();
        Assert.That(wrong, Is.Empty);
    }

    [Test]
    public void ImageAndTensorInputsAgreeWithPlanes()
    {
        var spec = new ShapeSpec(ShapeKind.Triangle, ShapeColor.Green, ShapeSize.Large, ShapePosition.Right, ShapeColor.White, 0.01, -0.02);
        var expected = ShapeJudge.Judge(ShapesDataset.RenderPlanes(spec), 64, 64);
        using var image = ShapesDataset.RenderImage(spec);
        using var t = ShapesDataset.Render(spec);
        using var t01 = (t + 1) / 2;
        var fromImage = ShapeJudge.Judge(image);
        var fromTensor = ShapeJudge.Judge(t01);
        foreach (var v in new[] { expected, fromImage, fromTensor })
        {
            Assert.That(v.Shape, Is.EqualTo(ShapeKind.Triangle));
            Assert.That(v.Color, Is.EqualTo(ShapeColor.Green));
            Assert.That(v.Position, Is.EqualTo(ShapePosition.Right));
            Assert.That(v.Size, Is.EqualTo(ShapeSize.Large));
            Assert.That(v.Background, Is.EqualTo(ShapeColor.White));
            Assert.That(v.Confidence, Is.InRange(0.0, 1.0));
        }
        Assert.That(fromTensor, Is.EqualTo(expected));
    }

    [Test]
    public void BlankPictureHasNoShape()
    {
        using var blank = new Image<Rgb24>(64, 64, new Rgb24(25, 60, 230));
        var v = ShapeJudge.Judge(blank);
        Assert.That(v.Found, Is.False);
        Assert.That(v.Background, Is.EqualTo(ShapeColor.Blue));
        Assert.That(v.Confidence, Is.Zero);
    }

    [Test]
    public void LargerRenderingsAreJudgedToo()
    {
        var spec = new ShapeSpec(ShapeKind.Circle, ShapeColor.Red, ShapeSize.Small, ShapePosition.Bottom, ShapeColor.Blue);
        var v = ShapeJudge.Judge(ShapesDataset.RenderPlanes(spec, 256), 256, 256);
        Assert.That((v.Shape, v.Color, v.Size, v.Position, v.Background), Is.EqualTo((ShapeKind.Circle, ShapeColor.Red, ShapeSize.Small, ShapePosition.Bottom, ShapeColor.Blue)));
    }

    [Test]
    public void ReportScoresOnlyStatedAttributes()
    {
        var spec = new ShapeSpec(ShapeKind.Circle, ShapeColor.Red, ShapeSize.Small, ShapePosition.Left, ShapeColor.Blue);
        var wrongPlace = new JudgeVerdict(ShapeKind.Circle, ShapeColor.Red, ShapeSize.Large, ShapePosition.Right, ShapeColor.Blue, 100, 0.78, 0, 0.5);
        var report = JudgeReport.Compute([new JudgedSample(spec, CaptionStyle.Short, wrongPlace), new JudgedSample(spec, CaptionStyle.Full, wrongPlace)]);
        Assert.That(report.Shape, Is.EqualTo(new AttributeAccuracy(2, 2)));
        Assert.That(report.Size, Is.EqualTo(new AttributeAccuracy(0, 1)));
        Assert.That(report.Position, Is.EqualTo(new AttributeAccuracy(0, 1)));
        Assert.That(report.All, Is.EqualTo(new AttributeAccuracy(1, 2)));
        Assert.That(report.ToMarkdown(), Does.Contain("| all stated | 50.0% (1/2) |"));
        // Only the prompt that states the position enters the confusion table: asked left, seen right.
        Assert.That(report.PositionConfusion(ShapePosition.Left, ShapePosition.Right), Is.EqualTo(1));
        Assert.That(report.PositionConfusion(ShapePosition.Left, ShapePosition.Left), Is.EqualTo(0));
        Assert.That(report.PositionConfusionMarkdown(), Does.Contain("| left | 0 | 0 | 1 | 0 | 0 | 0 |"));
        var missed = new JudgeVerdict(null, null, null, null, ShapeColor.Blue, 0, 0, 0, 0);
        var none = JudgeReport.Compute([new JudgedSample(spec, CaptionStyle.Full, missed)]);
        Assert.That(none.PositionConfusion(ShapePosition.Left, null), Is.EqualTo(1));
        Assert.That(none, Is.Not.EqualTo(report));
        Assert.That(JudgeReport.Compute([new JudgedSample(spec, CaptionStyle.Full, wrongPlace)]), Is.EqualTo(JudgeReport.Compute([new JudgedSample(spec, CaptionStyle.Full, wrongPlace)])));
    }

    [Test]
    public void ContactSheetWritesGridAndCaptions()
    {
        string dir = Path.Combine(Path.GetTempPath(), "ld-sheet-" + Guid.NewGuid().ToString("N"));
        try
        {
            var items = Samples(5).Select(s => (s.Caption, ShapesDataset.RenderImage(s.Spec))).ToList();
            string png = Path.Combine(dir, "sheet.png");
            string md = ContactSheet.Save(png, items, 2);
            using var sheet = Image.Load<Rgb24>(png);
            Assert.That((sheet.Width, sheet.Height), Is.EqualTo((2 + 2 * 66, 2 + 3 * 66)));
            Assert.That(sheet[2 + 66 + 10, 2 + 66 + 10], Is.EqualTo(items[3].Item2[10, 10]));
            Assert.That(sheet[2 + 66 + 10, 2 + 2 * 66 + 10], Is.EqualTo(new Rgb24(128, 128, 128)));
            string text = File.ReadAllText(md);
            Assert.That(md, Is.EqualTo(Path.Combine(dir, "sheet.md")));
            Assert.That(text, Does.Contain($"| 3 | 1 | 1 | {items[3].Caption} |"));
            foreach (var (_, image) in items) image.Dispose();
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }
}
