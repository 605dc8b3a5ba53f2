namespace LatentDiffusion.Hub;

/// <summary>
/// Where and what <see cref="ModelHub.DownloadAsync"/> fetches. Every value left <see langword="null"/> comes from the
/// environment variables the Hugging Face tools share, so a cache and a token set up for them work here too.
/// </summary>
public sealed record ModelHubOptions
{
    /// <summary>The branch, tag or commit hash to fetch; default <c>main</c>.</summary>
    public string Revision { get; init; } = "main";

    /// <summary>
    /// The weights variant to prefer, e.g. <c>fp16</c> (<c>diffusion_pytorch_model.fp16.safetensors</c>); a component
    /// without that variant gets its plain weights. <see langword="null"/> (default): the plain weights, or the fp16
    /// ones where those are all a component has.
    /// </summary>
    public string? Variant { get; init; }

    /// <summary>The hub's address; default: the <c>HF_ENDPOINT</c> environment variable, else <c>https://huggingface.co</c>.</summary>
    public string? Endpoint { get; init; }

    /// <summary>
    /// The access token for private or gated repositories, sent as <c>Authorization: Bearer</c>; default: the
    /// <c>HF_TOKEN</c> environment variable, else <c>HUGGING_FACE_HUB_TOKEN</c>, else the token file
    /// (<c>HF_TOKEN_PATH</c>, else <c>HF_HOME/token</c>) that <c>huggingface-cli login</c> writes.
    /// </summary>
    public string? Token { get; init; }

    /// <summary>
    /// The hub cache folder (the layout huggingface_hub uses: <c>models--org--name/blobs</c>, <c>snapshots</c>,
    /// <c>refs</c>); default: <c>HF_HUB_CACHE</c>, else <c>HF_HOME/hub</c>, else <c>~/.cache/huggingface/hub</c>.
    /// </summary>
    public string? CacheDirectory { get; init; }

    /// <summary>The HTTP client to use (for a proxy, or tests); default: a shared client of this library.</summary>
    public HttpClient? HttpClient { get; init; }

    /// <summary>
    /// Use only what the cache holds and never reach the hub (as the Hugging Face tools do with <c>HF_HUB_OFFLINE=1</c>);
    /// default: the <c>HF_HUB_OFFLINE</c> environment variable (<c>1</c>, <c>true</c>, <c>yes</c> or <c>on</c>).
    /// </summary>
    public bool? Offline { get; init; }
}
