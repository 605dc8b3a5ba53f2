using LatentDiffusion.Pipelines;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace LatentDiffusion.Shapes;

/// <summary>
/// Generates the held-out evaluation prompts with a pipeline and judges each picture (<see cref="ShapeJudge"/>): the
/// accuracy per attribute says whether the model draws what the words say.
/// </summary>
public static class ShapesEvaluation
{
    /// <summary>
    /// Generates <paramref name="count"/> of <see cref="ShapesDataset.EvaluationCases"/> (each with its own seed) and judges them.
    /// </summary>
    /// <param name="pipeline">The model under test.</param>
    /// <param name="options">Generation settings (steps, guidance, scheduler); the prompt's seed replaces <see cref="GenerationOptions.Seed"/>.</param>
    /// <param name="count">How many cases, at most <see cref="ShapesDataset.EvaluationCaseCount"/>.</param>
    /// <param name="keepImages">How many of the first pictures to return (for a contact sheet).</param>
    /// <param name="progress">Told the number of pictures done.</param>
    /// <param name="cancellationToken">Checked between pictures.</param>
    public static (JudgeReport Report, IReadOnlyList<(string Caption, Image<Rgb24> Image)> Images) Run(StableDiffusionPipeline pipeline, GenerationOptions options,
        int count = ShapesDataset.EvaluationCaseCount, int keepImages = 16, IProgress<int>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(pipeline);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        var cases = ShapesDataset.EvaluationCases.Take(count).ToList();
        var judged = new List<JudgedSample>(cases.Count);
        var kept = new List<(string, Image<Rgb24>)>();
        for (int i = 0; i < cases.Count; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var c = cases[i];
            using var result = pipeline.Generate(c.Prompt, options with { Seed = c.Seed, ImagesPerPrompt = 1 }, null, cancellationToken);
            judged.Add(new JudgedSample(c.Spec, c.Style, ShapeJudge.Judge(result.Images[0])));
            if (kept.Count < keepImages) kept.Add((c.Prompt, result.Images[0].Clone()));
            progress?.Report(i + 1);
        }
        return (JudgeReport.Compute(judged), kept);
    }
}
