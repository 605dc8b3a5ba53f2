using System.Globalization;
using System.Text;

namespace LatentDiffusion.Cli;

/// <summary>
/// The generation parameters written into each PNG as a <c>parameters</c> text chunk, in AUTOMATIC1111's layout, so
/// that tools that read that chunk (the web UI's PNG Info, image browsers) show how an image was made:
/// <c>prompt\nNegative prompt: ...\nSteps: 25, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: shapes</c>.
/// </summary>
internal static class PngParameters
{
    /// <summary>The text for one image.</summary>
    /// <param name="prompt">The prompt.</param>
    /// <param name="negativePrompt">The negative prompt; its line is left out when empty, as the web UI does.</param>
    /// <param name="steps">The steps asked for.</param>
    /// <param name="sampler">The sampler's AUTOMATIC1111 name.</param>
    /// <param name="guidance">The guidance (CFG) scale.</param>
    /// <param name="seed">This image's seed (-1 when unknown).</param>
    /// <param name="width">The image width.</param>
    /// <param name="height">The image height.</param>
    /// <param name="model">The model's name.</param>
    /// <param name="strength">Image-to-image strength (the web UI's "Denoising strength"); null for text-to-image.</param>
    /// <param name="clipSkip">Text encoder layers skipped (0 = none; the web UI counts from 1, so 1 here is its "Clip skip: 2").</param>
    public static string Format(string prompt, string? negativePrompt, int steps, string sampler, double guidance, long seed,
        int width, int height, string model, double? strength, int clipSkip)
    {
        var text = new StringBuilder(prompt);
        if (!string.IsNullOrEmpty(negativePrompt)) text.Append("\nNegative prompt: ").Append(negativePrompt);
        text.Append(CultureInfo.InvariantCulture, $"\nSteps: {steps}, Sampler: {sampler}, CFG scale: {guidance:0.###}, Seed: {seed}, Size: {width}x{height}, Model: {model}");
        if (strength is { } s) text.Append(CultureInfo.InvariantCulture, $", Denoising strength: {s:0.###}");
        if (clipSkip > 0) text.Append(CultureInfo.InvariantCulture, $", Clip skip: {clipSkip + 1}");
        return text.ToString();
    }
}
