using LatentDiffusion.Pipelines;
using SixLabors.ImageSharp;

// usage: PackageConsumer MODEL_DIR OUTPUT.png
if (args.Length != 2)
{
    Console.Error.WriteLine("usage: PackageConsumer MODEL_DIR OUTPUT.png");
    return 2;
}
await using var pipeline = await StableDiffusionPipeline.LoadAsync(args[0]);
using var result = await pipeline.GenerateAsync("a red circle on a blue background", new GenerationOptions { Steps = 4, Seed = 42 });
await result.Images[0].SaveAsPngAsync(args[1]);
Console.WriteLine($"wrote {args[1]} ({result.Images[0].Width}x{result.Images[0].Height})");
return 0;
