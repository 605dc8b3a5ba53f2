using LatentDiffusion.Integration;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Tests.Pipelines;
using Microsoft.Extensions.AI;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Integration;

#pragma warning disable MEAI001 // IImageGenerator is marked experimental by Microsoft.Extensions.AI.
public class ImageGeneratorSeedTests
{
    [Test]
    public async Task EachImageCarriesItsOwnSeed()
    {
        var pipeline = TinyModels.Get("tiny-sd15");
        IImageGenerator generator = new LatentDiffusionImageGenerator(pipeline, new GenerationOptions { Steps = 2, Width = 64, Height = 64 });
        var options = new ImageGenerationOptions { Count = 3, AdditionalProperties = new AdditionalPropertiesDictionary { ["seed"] = 40 } };
        var response = await generator.GenerateAsync(new ImageGenerationRequest("a red circle"), options);
        var images = response.Contents.OfType<DataContent>().ToList();
        Assert.That(images.Select(i => i.AdditionalProperties?["seed"]), Is.EqualTo(new object[] { 40L, 41L, 42L }));
        Assert.That(response.RawRepresentation, Is.EqualTo(40L), "the first seed, as before");
    }
}
