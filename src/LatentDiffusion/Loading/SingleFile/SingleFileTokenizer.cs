using LatentDiffusion.Hub;
using LatentDiffusion.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LatentDiffusion.Loading.SingleFile;

/// <summary>
/// Finds the CLIP tokenizer of a single-file checkpoint, which carries none. Every Stable Diffusion 1.x, 2.x and SDXL
/// text encoder reads OpenAI CLIP's byte-level BPE vocabulary (49,408 tokens, the same <c>vocab.json</c> and
/// <c>merges.txt</c> in every repository listed by <see cref="KnownSources"/>); the families differ only in the pad
/// token, which is set here from the checkpoint's text encoder (SD 1.x: <c>&lt;|endoftext|&gt;</c>, SD 2.x: <c>!</c>;
/// SDXL's first tokenizer is SD 1.x's, and loading an SDXL pipeline reads its second with the pad token <c>!</c>).
/// </summary>
/// <remarks>
/// Looked for in this order: a tokenizer folder given by the caller; the Hugging Face hub cache, in the snapshots of
/// the repositories of <see cref="KnownSources"/> (so a model fetched by <c>ldm pull</c>, diffusers or
/// transformers serves); else those two files (about 1.4 MB) are downloaded once into that cache from the
/// repository the reference's single-file loader takes its SD 1.x or 2.x configs from, falling back to
/// <c>openai/clip-vit-large-patch14</c>. Offline, or when the hub cannot be reached, the error names what is missing
/// and the ways out. The vocabulary files are not shipped in the package: they are OpenAI's, fetched from where they
/// are published.
/// </remarks>
public static class SingleFileTokenizer
{
    /// <summary>The files read from a tokenizer folder.</summary>
    public static readonly IReadOnlyList<string> Files = ["vocab.json", "merges.txt"];

    private const string OpenAiClip = "openai/clip-vit-large-patch14";

    /// <summary>
    /// The hub repositories and folders (<c>""</c> for the root) known to hold the CLIP vocabulary, in the order they
    /// are looked for in the cache: the family's own first. The first of the family's is the one downloaded from.
    /// </summary>
    /// <param name="layout">The checkpoint's text encoder: <see cref="TextEncoderLayout.Clip"/> (SD 1.x) or <see cref="TextEncoderLayout.OpenClip"/> (SD 2.x).</param>
    public static IReadOnlyList<(string RepoId, string Folder)> KnownSources(TextEncoderLayout layout)
    {
        (string, string)[] sd1 =
        [
            ("stable-diffusion-v1-5/stable-diffusion-v1-5", "tokenizer"), ("runwayml/stable-diffusion-v1-5", "tokenizer"),
            ("CompVis/stable-diffusion-v1-4", "tokenizer"), (OpenAiClip, ""),
        ];
        (string, string)[] sd2 =
        [
            ("stabilityai/stable-diffusion-2-1", "tokenizer"), ("stabilityai/stable-diffusion-2-1-base", "tokenizer"),
            ("stabilityai/stable-diffusion-2", "tokenizer"), ("stabilityai/stable-diffusion-2-base", "tokenizer"),
            ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", ""),
        ];
        return layout == TextEncoderLayout.OpenClip ? [.. sd2, .. sd1] : [.. sd1, .. sd2];
    }

    /// <summary>The pad token of the family: <c>!</c> for SD 2.x (OpenCLIP), <c>&lt;|endoftext|&gt;</c> for SD 1.x.</summary>
    public static string PadToken(TextEncoderLayout layout) => layout == TextEncoderLayout.OpenClip ? "!" : "<|endoftext|>";

    /// <summary>
    /// The tokenizer for the single-file checkpoint <paramref name="checkpoint"/>: from <paramref name="tokenizerDirectory"/>
    /// when given, else from the hub cache, else downloaded into it (see the remarks of <see cref="SingleFileTokenizer"/>).
    /// </summary>
    /// <param name="checkpoint">The checkpoint's path, for messages.</param>
    /// <param name="layout">Its text encoder, which decides the family.</param>
    /// <param name="tokenizerDirectory">A folder with <c>tokenizer.json</c>, or <c>vocab.json</c> and <c>merges.txt</c>, used as it is.</param>
    /// <param name="hub">The cache, endpoint, token and offline mode; default: from the environment, as <see cref="ModelHub"/> reads them.</param>
    /// <param name="logger">Told where the tokenizer came from, and of a download.</param>
    /// <param name="cancellationToken">Stops a download.</param>
    /// <exception cref="FileNotFoundException">No tokenizer in the cache and none could be downloaded (offline, or the hub unreachable); the message says how to provide one.</exception>
    public static Task<ClipTokenizer> LoadAsync(string checkpoint, TextEncoderLayout layout, string? tokenizerDirectory = null,
        ModelHubOptions? hub = null, ILogger? logger = null, CancellationToken cancellationToken = default)
        => LoadCoreAsync(checkpoint, layout, tokenizerDirectory, hub ?? new ModelHubOptions(), logger ?? NullLogger.Instance, Environment.GetEnvironmentVariable, cancellationToken);

    /// <summary>
    /// <see cref="LoadAsync"/> with another pad token (SDXL's second tokenizer is the same CLIP vocabulary padded with
    /// <c>!</c>). A <paramref name="tokenizerDirectory"/> (<c>tokenizer.json</c>, or <c>vocab.json</c> and <c>merges.txt</c>) is read with that pad token too.
    /// </summary>
    internal static Task<ClipTokenizer> LoadWithPadAsync(string checkpoint, TextEncoderLayout layout, string padToken, string family, string? tokenizerDirectory,
        ModelHubOptions? hub, ILogger? logger, CancellationToken cancellationToken)
        => LoadCoreAsync(checkpoint, layout, tokenizerDirectory, hub ?? new ModelHubOptions(), logger ?? NullLogger.Instance, Environment.GetEnvironmentVariable, cancellationToken, padToken, family);

    /// <summary><see cref="LoadAsync"/> with the environment given (for tests).</summary>
    internal static async Task<ClipTokenizer> LoadCoreAsync(string checkpoint, TextEncoderLayout layout, string? tokenizerDirectory,
        ModelHubOptions hub, ILogger logger, Func<string, string?> environment, CancellationToken ct, string? padToken = null, string? familyName = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(checkpoint);
        // A given folder is read whole (tokenizer.json, or vocab.json and merges.txt, with its special tokens); a pad token
        // the caller names (SDXL's second tokenizer: "!") replaces the folder's own.
        if (tokenizerDirectory is not null) return ClipTokenizer.FromDirectoryWithPad(tokenizerDirectory, padToken);

        string family = familyName ?? (layout == TextEncoderLayout.OpenClip ? "SD 2.x" : "SD 1.x");
        // Only the default branch: a cached snapshot of any revision of these repositories holds the same vocabulary.
        var cacheOptions = hub with { Revision = "main" };
        string cacheDir = ModelHub.CacheDirectory(cacheOptions, environment);
        foreach (var (repo, folder) in KnownSources(layout))
        {
            if (new HubCache(cacheDir, repo).FindSnapshot("main", Paths(folder)) is { } snapshot)
            {
                string dir = Path.Combine(snapshot, folder);
                logger.LogInformation("Using the CLIP tokenizer of {Repo} from the hub cache ({Folder}) for the {Family} checkpoint {File}", repo, dir, family, checkpoint);
                return FromFolder(dir, layout, padToken);
            }
        }

        var sources = KnownSources(layout);
        (string RepoId, string Folder)[] downloadFrom = [sources[0], (OpenAiClip, "")];
        string reason;
        bool offline = ModelHub.IsOffline(cacheOptions, environment);
        if (offline)
        {
            reason = $"nothing was downloaded: offline ({(hub.Offline is true ? "ModelHubOptions.Offline" : "HF_HUB_OFFLINE")} is set)";
        }
        else
        {
            var failures = new List<string>();
            foreach (var source in downloadFrom)
            {
                try
                {
                    logger.LogInformation("Downloading the CLIP tokenizer ({Files}) of {Repo} into the hub cache {Cache}, once, for the {Family} checkpoint {File}",
                        string.Join(", ", Files), source.RepoId, cacheDir, family, checkpoint);
                    string snapshot = await ModelHub.DownloadFilesCoreAsync(source.RepoId, Paths(source.Folder), cacheOptions, null, environment, ct).ConfigureAwait(false);
                    return FromFolder(Path.Combine(snapshot, source.Folder), layout, padToken);
                }
                catch (IOException e)
                {
                    failures.Add($"{Describe(source)}: {e.Message}");
                }
            }
            reason = "the download failed: " + string.Join("; ", failures.Select(f => f.TrimEnd('.')));
        }
        throw new FileNotFoundException(
            $"'{checkpoint}' is a single-file {family} checkpoint, which carries no tokenizer, and none was found: the CLIP tokenizer files " +
            $"{string.Join(" and ", Files)} are not in the Hugging Face cache {cacheDir} (under {sources[0].RepoId}, {OpenAiClip} or {sources.Count - 2} other " +
            $"repositories that carry them), and {reason.TrimEnd('.')}. Ways out: --config <a diffusers folder of the same family> (PipelineOptions.ConfigDirectory), " +
            $"or `ldm pull {sources[0].RepoId}` once online (ModelHub.DownloadAsync), which leaves its tokenizer in the cache; a tokenizer folder alone goes to " +
            "--tokenizer (PipelineOptions.TokenizerDirectory)." +
            (offline ? " Online, loading the checkpoint fetches just the tokenizer files (about 1.4 MB), once." : ""),
            Files[0]);
    }

    private static ClipTokenizer FromFolder(string dir, TextEncoderLayout layout, string? padToken)
        => ClipTokenizer.FromVocabAndMerges(Path.Combine(dir, Files[0]), Path.Combine(dir, Files[1]), padToken ?? PadToken(layout), ClipTokenizer.DefaultMaxLength);

    private static string[] Paths(string folder) => [.. Files.Select(f => folder.Length == 0 ? f : folder + "/" + f)];

    private static string Describe((string RepoId, string Folder) source) => source.Folder.Length == 0 ? source.RepoId : $"{source.RepoId} ({source.Folder}/)";
}
