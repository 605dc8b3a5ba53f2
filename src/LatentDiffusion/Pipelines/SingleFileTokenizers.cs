using LatentDiffusion.Loading.SingleFile;
using LatentDiffusion.Text;
using Microsoft.Extensions.Logging;

namespace LatentDiffusion.Pipelines;

/// <summary>Which tokenizer a single-file checkpoint loads with, from the <see cref="PipelineOptions"/>.</summary>
internal static class SingleFileTokenizers
{
    /// <summary>
    /// <see cref="PipelineOptions.TokenizerDirectory"/>, else <see cref="PipelineOptions.ConfigDirectory"/>'s
    /// <c>tokenizer/</c> when it has one, else <see cref="SingleFileTokenizer"/> (the hub cache, or a download). A
    /// <c>padToken</c> other than the family's (SDXL's second tokenizer pads with <c>!</c>) reads the same vocabulary with
    /// that pad token, and <c>family</c> is then the family named in messages.
    /// </summary>
    public static ClipTokenizer Load(string file, TextEncoderLayout layout, PipelineOptions options, ILogger logger, CancellationToken ct, string? padToken = null, string family = "SDXL")
    {
        string? folder = options.TokenizerDirectory;
        if (folder is null && options.ConfigDirectory is { } config && Directory.Exists(Path.Combine(config, "tokenizer")))
            folder = Path.Combine(config, "tokenizer");
        // Loading runs on a worker thread (LoadAsync); the hub calls never capture a context, so waiting here is safe.
        var loading = padToken is null
            ? SingleFileTokenizer.LoadAsync(file, layout, folder, options.Hub, logger, ct)
            : SingleFileTokenizer.LoadWithPadAsync(file, layout, padToken, family, folder, options.Hub, logger, ct);
        return loading.GetAwaiter().GetResult();
    }
}
