using System.Text.Json;
using LatentDiffusion.Integration;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Tests.Pipelines;
using Microsoft.Extensions.AI;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Integration;

#pragma warning disable MEAI001 // IImageGenerator is marked experimental by Microsoft.Extensions.AI.
/// <summary>
/// The adapter's <c>AdditionalProperties</c> as an app forwarding a JSON request passes them (<see cref="JsonElement"/>s
/// and strings), and bad ones refused by name with an <see cref="ArgumentException"/> (was an InvalidCastException or
/// FormatException from Convert).
/// </summary>
public class ImageGeneratorPropertiesTests
{
    private static byte[] FirstPng(ImageGenerationResponse response) => response.Contents.OfType<DataContent>().First().Data.ToArray();

    private static ImageGenerationOptions Options(AdditionalPropertiesDictionary extra) => new() { ImageSize = new System.Drawing.Size(32, 32), AdditionalProperties = extra };

    [Test]
    public async Task JsonElementsAndNumericStringsAreReadAsTheNumbersTheyHold()
    {
        IImageGenerator generator = new LatentDiffusionImageGenerator(GeneratedModel.Pipeline, new GenerationOptions { Steps = 2 });
        using var json = JsonDocument.Parse("""{"seed": 9007199254740993, "steps": 2, "guidance_scale": 3.5}""");
        var fromJson = await generator.GenerateAsync(new ImageGenerationRequest("a red circle"), Options(new()
        {
            ["seed"] = json.RootElement.GetProperty("seed"), ["steps"] = json.RootElement.GetProperty("steps"), ["guidance_scale"] = json.RootElement.GetProperty("guidance_scale"),
        }));
        var fromNumbers = await generator.GenerateAsync(new ImageGenerationRequest("a red circle"), Options(new() { ["seed"] = 9007199254740993L, ["steps"] = 2, ["guidance_scale"] = 3.5 }));
        var fromStrings = await generator.GenerateAsync(new ImageGenerationRequest("a red circle"), Options(new() { ["seed"] = "9007199254740993", ["steps"] = "2", ["guidance_scale"] = "3.5" }));
        Assert.That(FirstPng(fromJson), Is.EqualTo(FirstPng(fromNumbers)));
        Assert.That(FirstPng(fromStrings), Is.EqualTo(FirstPng(fromNumbers)));
        // The seed is kept exactly (above 2^53 a double would round it to ...992).
        Assert.That(fromJson.Contents.OfType<DataContent>().First().AdditionalProperties!["seed"], Is.EqualTo(9007199254740993L));
    }

    [TestCase("seed", "abc")]
    [TestCase("steps", 2.5)]
    [TestCase("steps", 1e12)]
    [TestCase("guidance_scale", true)]
    [TestCase("padding_mask_crop", "[1]")]
    public void ABadValueIsRefusedNamingTheProperty(string name, object value)
    {
        object given = value is string text && text.StartsWith('[') ? JsonDocument.Parse(text).RootElement.Clone() : value;
        IImageGenerator generator = new LatentDiffusionImageGenerator(GeneratedModel.Pipeline, new GenerationOptions { Steps = 2 });
        var e = Assert.ThrowsAsync<ArgumentException>(() => generator.GenerateAsync(new ImageGenerationRequest("a red circle"), Options(new() { [name] = given })));
        Assert.That(e!.Message, Does.Contain($"AdditionalProperties[\"{name}\"]"));
    }
}
