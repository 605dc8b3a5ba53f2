using System.Text.Json;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Tests.Pipelines;
using Microsoft.Extensions.Logging.Abstractions;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.XlFamily;

/// <summary>SDXL's prompt encoding and whole generations against the reference (<c>sdxl/encode_prompt</c>, <c>sdxl/txt2img</c>, <c>sdxl/img2img</c>).</summary>
public class SdxlPipelineParityTests
{
    public static IEnumerable<TestCaseData> TextToImageCases() => Fixtures.CaseSource(() => SdxlFixtures.Cases
        .Where(c => c.GetProperty("kind").GetString() == "sdxl_txt2img")
        .Select(c => new TestCaseData(c.GetProperty("key").GetString()).SetName("sdxl txt2img " + c.GetProperty("key").GetString())), "");

    public static IEnumerable<TestCaseData> ImageToImageCases() => Fixtures.CaseSource(() => SdxlFixtures.Cases
        .Where(c => c.GetProperty("kind").GetString() == "sdxl_img2img")
        .Select(c => new TestCaseData(c.GetProperty("key").GetString()).SetName("sdxl img2img " + c.GetProperty("key").GetString())), "");

    internal static JsonElement Case(string key) => SdxlFixtures.Cases.Single(c => c.TryGetProperty("key", out var k) && k.GetString() == key);

    private static string? Text(JsonElement call, string name) => call.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static (int, int)? Pair(JsonElement call, string name)
        => call.TryGetProperty(name, out var v) ? (v[0].GetInt32(), v[1].GetInt32()) : null;

    /// <summary>The public-API options of a case's pipeline call (the scheduler exactly as the reference ran it).</summary>
    internal static GenerationOptions Options(JsonElement c)
    {
        var call = c.GetProperty("call");
        double Number(string name, double fallback) => call.TryGetProperty(name, out var v) ? v.GetDouble() : fallback;
        return new GenerationOptions
        {
            NegativePrompt = Text(call, "negative_prompt"),
            Prompt2 = Text(call, "prompt_2"),
            NegativePrompt2 = Text(call, "negative_prompt_2"),
            GuidanceScale = call.GetProperty("guidance_scale").GetDouble(),
            GuidanceRescale = Number("guidance_rescale", 0),
            Steps = call.GetProperty("num_inference_steps").GetInt32(),
            Width = call.TryGetProperty("width", out var w) ? w.GetInt32() : null,
            Height = call.TryGetProperty("height", out var h) ? h.GetInt32() : null,
            Strength = Number("strength", 0.3),
            OriginalSize = Pair(call, "original_size"),
            CropsCoordsTopLeft = Pair(call, "crops_coords_top_left"),
            TargetSize = Pair(call, "target_size"),
            NegativeOriginalSize = Pair(call, "negative_original_size"),
            NegativeCropsCoordsTopLeft = Pair(call, "negative_crops_coords_top_left"),
            NegativeTargetSize = Pair(call, "negative_target_size"),
            Seed = c.GetProperty("seed").GetInt64(),
            CustomScheduler = PipelineParityTests.SchedulerAsRun(c),
        };
    }

    [TestCase(0)]
    [TestCase(1)]
    public void EncodePromptMatchesTheReference(int index)
    {
        var pipeline = TinyModels.Get("tiny-sdxl");
        var call = SdxlFixtures.Case("sdxl_components").GetProperty("encode_cases")[index];
        var conditioner = new SdxlConditioner(pipeline.Tokenizer, pipeline.TextEncoder, pipeline.Tokenizer2!, pipeline.TextEncoder2!, pipeline.XLOptions!, NullLogger.Instance);
        var options = new GenerationOptions { NegativePrompt = Text(call, "negative_prompt"), Prompt2 = Text(call, "prompt_2") };
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (context, added) = conditioner.Encode(Text(call, "prompt")!, options, 1, guidance: true, 128, 128, imageToImage: false, ScalarType.Float32, CPU);
        string key = $"sdxl/encode_prompt/{index}/";
        AssertTensor.RelativeClose(context[1..2], SdxlFixtures.Expected(key + "prompt_embeds"), 1e-4, key + "prompt_embeds");
        AssertTensor.RelativeClose(added.TextEmbeds[1..2], SdxlFixtures.Expected(key + "pooled_prompt_embeds"), 1e-4, key + "pooled_prompt_embeds");
        var negative = SdxlFixtures.Expected(key + "negative_prompt_embeds");
        var negativePooled = SdxlFixtures.Expected(key + "negative_pooled_prompt_embeds");
        if (index == 0)
        {
            // No negative prompt and force_zeros_for_empty_prompt: exact zeros, not the encoded empty prompt.
            Assert.That(negative.abs().max().item<float>(), Is.EqualTo(0f));
            Assert.That(context[0].abs().max().item<float>(), Is.EqualTo(0f));
            Assert.That(added.TextEmbeds[0].abs().max().item<float>(), Is.EqualTo(0f));
        }
        else
        {
            AssertTensor.RelativeClose(context[0..1], negative, 1e-4, key + "negative_prompt_embeds");
            AssertTensor.RelativeClose(added.TextEmbeds[0..1], negativePooled, 1e-4, key + "negative_pooled_prompt_embeds");
        }
        // Default micro-conditioning: (h, w) + (0, 0) + (h, w), the same for both halves.
        Assert.That(added.TimeIds.data<float>().ToArray(), Is.EqualTo(new float[] { 128, 128, 0, 0, 128, 128, 128, 128, 0, 0, 128, 128 }));
    }

    [TestCaseSource(nameof(TextToImageCases))]
    public async Task TextToImageMatchesReference(string key)
    {
        var c = Case(key);
        var pipeline = TinyModels.Get("tiny-sdxl");
        Assert.That(pipeline.IsStableDiffusionXL);
        using var result = await pipeline.GenerateAsync(c.GetProperty("call").GetProperty("prompt").GetString()!, Options(c));
        using var expected = SdxlFixtures.Expected(key + "/image");
        Report(result.Pixels, expected, key);
        AssertTensor.MaxAbsClose(result.Pixels, expected, 2e-3, key);
    }

    /// <summary>Writes the measured error to the test output (the numbers docs/sdxl.md quotes).</summary>
    private static void Report(Tensor actual, Tensor expected, string key)
        => TestContext.Out.WriteLine($"{key}: max abs {(actual - expected.reshape(actual.shape)).abs().max().item<float>():E2}");

    [TestCaseSource(nameof(ImageToImageCases))]
    public async Task ImageToImageMatchesReference(string key)
    {
        var c = Case(key);
        var pipeline = TinyModels.Get("tiny-sdxl");
        using var initPixels = SdxlFixtures.Expected(key + "/init_image");
        using var init = PipelineParityTests.ToImage(initPixels);
        var options = Options(c) with { InitImage = init };
        using var result = await pipeline.GenerateAsync(c.GetProperty("call").GetProperty("prompt").GetString()!, options);
        using var expected = SdxlFixtures.Expected(key + "/image");
        Report(result.Pixels, expected, key);
        AssertTensor.MaxAbsClose(result.Pixels, expected, 2e-3, key);
    }
}
