using LatentDiffusion.Shapes;
using NUnit.Framework;
using TorchSharp;

namespace LatentDiffusion.Tests.Shapes;

public sealed class ShapesDatasetTests
{
    [Test]
    public void SampleIsDeterministicAndVaried()
    {
        var a = Enumerable.Range(0, 200).Select(i => ShapesDataset.Sample(42, i)).ToList();
        var b = Enumerable.Range(0, 200).Select(i => ShapesDataset.Sample(42, i)).ToList();
        Assert.That(a, Is.EqualTo(b));
        Assert.That(ShapesDataset.Sample(43, 0), Is.Not.EqualTo(a[0]));
        Assert.That(a.Select(s => s.Spec.Shape).Distinct().Count(), Is.EqualTo(4));
        Assert.That(a.Select(s => s.Spec.Color).Distinct().Count(), Is.EqualTo(8));
        Assert.That(a.Select(s => s.Spec.Position).Distinct().Count(), Is.EqualTo(5));
        Assert.That(a.Select(s => s.Style).Distinct().Count(), Is.EqualTo(5));
        Assert.That(a.All(s => s.Spec.Color != s.Spec.Background));
        Assert.That(a.All(s => s.Caption == s.Spec.Caption(s.Style)));
    }

    [Test]
    public void CaptionsReadAsExpected()
    {
        var spec = new ShapeSpec(ShapeKind.Circle, ShapeColor.Red, ShapeSize.Small, ShapePosition.Left, ShapeColor.Blue);
        Assert.That(spec.Caption(CaptionStyle.Full), Is.EqualTo("a small red circle on the left, blue background"));
        Assert.That(spec.Caption(CaptionStyle.FullOn), Is.EqualTo("a small red circle on the left on a blue background"));
        Assert.That(spec.Caption(CaptionStyle.NoSize), Is.EqualTo("a red circle on the left on a blue background"));
        Assert.That(spec.Caption(CaptionStyle.NoPosition), Is.EqualTo("a small red circle on a blue background"));
        Assert.That(spec.Caption(CaptionStyle.Short), Is.EqualTo("a red circle on a blue background"));
        var orange = new ShapeSpec(ShapeKind.Square, ShapeColor.Orange, ShapeSize.Large, ShapePosition.Top, ShapeColor.White);
        Assert.That(orange.Caption(CaptionStyle.Short), Is.EqualTo("an orange square on a white background"));
        var black = orange with { Color = ShapeColor.Black, Background = ShapeColor.Orange };
        Assert.That(black.Caption(CaptionStyle.NoSize), Is.EqualTo("a black square at the top on an orange background"));
    }

    [Test]
    public void TrainingStreamNeverShowsHeldOutContents()
    {
        for (int i = 0; i < 5000; i++)
            Assert.That(ShapesDataset.IsHeldOut(ShapesDataset.Sample(7, i).Spec), Is.False, $"sample {i}");
    }

    [Test]
    public void EvaluationCasesAreHeldOutDistinctAndStable()
    {
        var cases = ShapesDataset.EvaluationCases;
        Assert.That(cases, Has.Count.EqualTo(200));
        Assert.That(cases.All(c => ShapesDataset.IsHeldOut(c.Spec)));
        Assert.That(cases.Select(c => (c.Prompt, c.Seed)).Distinct().Count(), Is.EqualTo(200));
        Assert.That(cases.Select(c => c.Spec).Distinct().Count(), Is.EqualTo(200));
        Assert.That(cases.Select(c => c.Seed), Is.EqualTo(Enumerable.Range(ShapesDataset.EvaluationSeedBase, 200)));
        Assert.That(cases.All(c => c.Prompt == c.Spec.Caption(c.Style)));
        Assert.That(cases.Select(c => c.Spec.Shape).Distinct().Count(), Is.EqualTo(4));
        Assert.That(cases.Select(c => c.Spec.Color).Distinct().Count(), Is.EqualTo(8));
        // Held-out contents are one tenth; every (shape, colour, background) still has training contents.
        var all = ShapesDataset.AllContents().ToList();
        Assert.That(all, Has.Count.EqualTo(2240));
        int held = all.Count(ShapesDataset.IsHeldOut);
        Assert.That(held, Is.InRange(200, 280));
        foreach (var g in all.GroupBy(s => (s.Shape, s.Color, s.Background)))
            Assert.That(g.Any(s => !ShapesDataset.IsHeldOut(s)), $"{g.Key} has no training content");
    }

    [Test]
    public void ReadmePromptIsTrainedOn()
    {
        var readme = Enumerable.Range(0, 20000).Select(i => ShapesDataset.Sample(1, i))
            .Count(s => s.Caption == "a red circle on a blue background");
        Assert.That(readme, Is.GreaterThan(0));
    }

    [Test]
    public void BatchHasTheRightShapeRangeAndContent()
    {
        using var batch = ShapesDataset.Batch(3, 2, 8);
        var (images, captions, specs) = batch;
        Assert.That(images.shape, Is.EqualTo(new long[] { 8, 3, 64, 64 }));
        Assert.That(images.dtype, Is.EqualTo(torch.ScalarType.Float32));
        Assert.That(images.min().item<float>(), Is.GreaterThanOrEqualTo(-1f));
        Assert.That(images.max().item<float>(), Is.LessThanOrEqualTo(1f));
        for (int i = 0; i < 8; i++)
        {
            var expected = ShapesDataset.Sample(3, 16 + i);
            Assert.That(captions[i], Is.EqualTo(expected.Caption));
            Assert.That(specs[i], Is.EqualTo(expected.Spec));
            using var single = ShapesDataset.Render(expected.Spec);
            using var row = images[i];
            Assert.That(row.eq(single).all().item<bool>(), $"picture {i}");
        }
    }

    [Test]
    public void RenderHasExactFlatColours()
    {
        var spec = new ShapeSpec(ShapeKind.Square, ShapeColor.Yellow, ShapeSize.Large, ShapePosition.Center, ShapeColor.Purple);
        using var image = ShapesDataset.RenderImage(spec);
        Assert.That(image.Width, Is.EqualTo(64));
        var (r, g, b) = ShapePalette.Rgb(ShapeColor.Yellow);
        Assert.That(image[32, 32], Is.EqualTo(new SixLabors.ImageSharp.PixelFormats.Rgb24(r, g, b)));
        (r, g, b) = ShapePalette.Rgb(ShapeColor.Purple);
        Assert.That(image[0, 0], Is.EqualTo(new SixLabors.ImageSharp.PixelFormats.Rgb24(r, g, b)));
        Assert.Throws<ArgumentException>(() => ShapesDataset.RenderPlanes(spec with { Background = ShapeColor.Yellow }));
    }
}
