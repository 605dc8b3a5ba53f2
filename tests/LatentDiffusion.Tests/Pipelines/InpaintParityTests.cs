using System.Text.Json;
using LatentDiffusion.Pipelines;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary>
/// Every inpainting case of reference-phase2.json (the reference's <c>StableDiffusionInpaintPipeline</c>: the 9-channel
/// tiny-sd15-inpaint with PNDM and DDIM at strengths 1 and 0.75, and tiny-sd15's 4-channel UNet through the blending
/// path) through the public API, within 2e-3 max absolute.
/// </summary>
public class InpaintParityTests
{
    public static IEnumerable<TestCaseData> Cases() => Fixtures.CaseSource(() => Fixtures.Phase2Cases
        .Where(c => c.GetProperty("kind").GetString() == "inpaint")
        .Select(c => new TestCaseData(c.GetProperty("key").GetString()).SetName("inpaint " + c.GetProperty("key").GetString())), "");

    internal static JsonElement Case(string key) => Fixtures.Phase2Cases.Single(c => c.TryGetProperty("key", out var k) && k.GetString() == key);

    /// <summary>The stored init image (HWC, k/255) as 8-bit RGB.</summary>
    internal static Image<Rgb24> InitImage()
    {
        using var pixels = Fixtures.ExpectedPhase2("inpaint/init_image");
        return PipelineParityTests.ToImage(pixels);
    }

    /// <summary>The stored mask (HW, k/255, 255 = repaint, soft edge) as a gray 8-bit RGB image.</summary>
    internal static Image<Rgb24> Mask()
    {
        using var gray = Fixtures.ExpectedPhase2("inpaint/mask");
        using var rgb = gray.unsqueeze(-1).expand(-1, -1, 3).contiguous();
        return PipelineParityTests.ToImage(rgb);
    }

    /// <summary>The public-API options of a case, with the scheduler exactly as the reference ran it.</summary>
    internal static GenerationOptions Options(JsonElement c, Image<Rgb24> init, Image<Rgb24> mask)
    {
        var call = c.GetProperty("call");
        return new GenerationOptions
        {
            InitImage = init,
            Mask = mask,
            NegativePrompt = call.GetProperty("negative_prompt").GetString(),
            Strength = call.GetProperty("strength").GetDouble(),
            GuidanceScale = call.GetProperty("guidance_scale").GetDouble(),
            Steps = call.GetProperty("num_inference_steps").GetInt32(),
            Width = call.GetProperty("width").GetInt32(),
            Height = call.GetProperty("height").GetInt32(),
            Seed = c.GetProperty("seed").GetInt64(),
            CustomScheduler = PipelineParityTests.SchedulerAsRun(c),
        };
    }

    [TestCaseSource(nameof(Cases))]
    public async Task InpaintingMatchesReference(string key)
    {
        var c = Case(key);
        var pipeline = TinyModels.Get(c.GetProperty("model").GetString()!);
        Assert.That(pipeline.UNet.InChannels, Is.EqualTo(c.GetProperty("unet_in_channels").GetInt32()), "the case's UNet");
        using var init = InitImage();
        using var mask = Mask();
        using var result = await pipeline.GenerateAsync(c.GetProperty("call").GetProperty("prompt").GetString()!, Options(c, init, mask));
        using var expected = Fixtures.ExpectedPhase2(key + "/image");
        TestContext.Out.WriteLine($"{key}: max abs {(result.Pixels - expected).abs().max().item<float>():E2}");
        AssertTensor.MaxAbsClose(result.Pixels, expected, 2e-3, key);
    }
}
