using System.Diagnostics;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Runtime;
using LatentDiffusion.Shapes;

namespace LatentDiffusion.Benchmarks;

/// <summary>
/// <c>shapes-eval MODEL_DIR [--count 200] [--steps 25] [--guidance 7.5] [--scheduler NAME] [--sheet FILE.png]</c>: generates the
/// 200 held-out prompt/seed pairs of the synthetic shapes data with a model and prints the judge's accuracy per attribute.
/// </summary>
internal static class ShapesEvaluationMode
{
    public static int Run(string[] args)
    {
        if (args.Length < 1) { Console.Error.WriteLine("usage: shapes-eval MODEL_DIR [--count 200] [--steps 25] [--guidance 7.5] [--scheduler NAME] [--sheet FILE.png]"); return 2; }
        string Get(string name, string fallback) { int i = Array.IndexOf(args, name); return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback; }
        TorchRuntime.EnsureInitialized();
        var clock = Stopwatch.StartNew();
        using var pipeline = StableDiffusionPipeline.LoadAsync(args[0]).GetAwaiter().GetResult();
        string? scheduler = Get("--scheduler", "") is { Length: > 0 } s ? s : null;
        var options = new GenerationOptions { Steps = int.Parse(Get("--steps", "25")), GuidanceScale = double.Parse(Get("--guidance", "7.5"), System.Globalization.CultureInfo.InvariantCulture), Scheduler = scheduler };
        var (report, images) = ShapesEvaluation.Run(pipeline, options, int.Parse(Get("--count", "200")));
        Console.WriteLine(report.ToMarkdown());
        Console.WriteLine(report.PositionConfusionMarkdown());
        Console.WriteLine($"{clock.Elapsed.TotalSeconds:F1} s");
        if (Get("--sheet", "") is { Length: > 0 } sheet)
        {
            var table = ContactSheet.Save(sheet, images, 4);
            Console.WriteLine($"contact sheet {sheet}, captions {table}");
        }
        foreach (var (_, image) in images) image.Dispose();
        return 0;
    }
}
