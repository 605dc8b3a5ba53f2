using LatentDiffusion.Pipelines;
using NUnit.Framework;
using static LatentDiffusion.Tests.Pipelines.InpaintingTests;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary>
/// Without a <see cref="GenerationOptions.Strength"/>, a generation uses the default of the reference pipeline for its
/// mode and model (diffusers' <c>strength</c> argument), so that the same call gives the same picture: image-to-image 0.8
/// (SDXL 0.3), inpainting 1.0 (SDXL 0.9999).
/// </summary>
public class StrengthDefaultTests
{
    private static readonly GenerationOptions Quick = new() { Steps = 5, GuidanceScale = 7.5, Seed = 4, ReturnLatents = true };

    [Test]
    public void StrengthForGivesTheReferenceDefaultOfEachModeAndModelAndAGivenStrengthAsItIs()
    {
        using var init = Pattern(64, 64);
        using var mask = MaskWhere(64, 64, (x, _) => x < 32);
        var sd = GeneratedModel.Pipeline;
        Assert.That(sd.StrengthFor(new GenerationOptions { InitImage = init }), Is.EqualTo(0.8));
        Assert.That(sd.StrengthFor(new GenerationOptions { InitImage = init, Mask = mask }), Is.EqualTo(1.0));
        Assert.That(sd.StrengthFor(new GenerationOptions { InitImage = init, Mask = mask, Strength = 0.5 }), Is.EqualTo(0.5));
        Assert.That(sd.StrengthFor(new GenerationOptions()), Is.EqualTo(1.0), "text-to-image");

        var xl = TinyModels.Get("tiny-sdxl");
        Assert.That(xl.StrengthFor(new GenerationOptions { InitImage = init }), Is.EqualTo(0.3));
        Assert.That(xl.StrengthFor(new GenerationOptions { InitImage = init, Mask = mask }), Is.EqualTo(0.9999));
        Assert.That(xl.StrengthFor(new GenerationOptions { InitImage = init, Strength = 0.8 }), Is.EqualTo(0.8));
    }

    [Test]
    public void InpaintingWithoutAStrengthStartsTheMaskedPartFromNoiseAsTheReferenceDoesAtOne()
    {
        var pipeline = GeneratedModel.Pipeline;
        using var init = Pattern(64, 64);
        using var mask = MaskWhere(64, 64, (x, _) => x < 32);
        var options = Quick with { InitImage = init, Mask = mask };
        using var byDefault = pipeline.Generate("a cat", options);
        using var atOne = pipeline.Generate("a cat", options with { Strength = 1.0 });
        using var atOldDefault = pipeline.Generate("a cat", options with { Strength = 0.8 });
        AssertTensor.MaxAbsClose(byDefault.Latents!, atOne.Latents!, 0, "inpainting's default is strength 1");
        Assert.That(byDefault.Latents!.equal(atOldDefault.Latents!).all().item<bool>(), Is.False, "0.8 gives another picture");
    }

    [Test]
    public void ImageToImageWithoutAStrengthRunsAt08OnSdAndAt03OnSdxl()
    {
        using var init = Pattern(64, 64);
        var sd = GeneratedModel.Pipeline;
        using (var byDefault = sd.Generate("a cat", Quick with { InitImage = init }))
        using (var given = sd.Generate("a cat", Quick with { InitImage = init, Strength = 0.8 }))
            AssertTensor.MaxAbsClose(byDefault.Latents!, given.Latents!, 0, "SD image-to-image default");

        var xl = TinyModels.Get("tiny-sdxl");
        var xlOptions = Quick with { InitImage = init, Steps = 10, GuidanceScale = 5 };
        using var xlDefault = xl.Generate("a red car", xlOptions);
        using var xlGiven = xl.Generate("a red car", xlOptions with { Strength = 0.3 });
        using var xlOld = xl.Generate("a red car", xlOptions with { Strength = 0.8 });
        AssertTensor.MaxAbsClose(xlDefault.Latents!, xlGiven.Latents!, 0, "SDXL image-to-image default (the refiner's 0.3)");
        Assert.That(xlDefault.Latents!.equal(xlOld.Latents!).all().item<bool>(), Is.False);
    }

    [Test]
    public void TooFewStepsForTheDefaultStrengthIsTheUsualErrorNamingTheStrengthUsed()
    {
        // SDXL image-to-image at 3 steps keeps int(3 × 0.3) = 0: the reference raises an error, and so does this library.
        using var init = Pattern(64, 64);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => TinyModels.Get("tiny-sdxl").Generate("a red car", new GenerationOptions { InitImage = init, Steps = 3 }))!;
        Assert.That(e.Message, Does.Contain("Strength 0.3 and Steps 3"));
    }
}
