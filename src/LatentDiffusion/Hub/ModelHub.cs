using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace LatentDiffusion.Hub;

/// <summary>
/// Downloads diffusers models from the Hugging Face Hub (or a mirror with the same HTTP API) into the cache the
/// Hugging Face tools share, fetching only the files a pipeline of this library loads.
/// </summary>
public static partial class ModelHub
{
    /// <summary>The public hub, used when neither <see cref="ModelHubOptions.Endpoint"/> nor <c>HF_ENDPOINT</c> is set.</summary>
    public const string DefaultEndpoint = "https://huggingface.co";

    private const int MaxTreePages = 1000;
    private const long ProgressStep = 1 << 20;

    private static readonly Lazy<HttpClient> SharedClient = new(() =>
    {
        var client = new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = true, MaxAutomaticRedirections = 10 });
        client.DefaultRequestHeaders.UserAgent.ParseAdd("LatentDiffusion/" + (typeof(ModelHub).Assembly.GetName().Version?.ToString() ?? "0"));
        return client;
    });

    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?$")]
    private static partial Regex RepoIdPattern();

    /// <summary>
    /// Downloads what a pipeline needs of the diffusers repository <paramref name="repoId"/> (<c>org/name</c>) at
    /// <see cref="ModelHubOptions.Revision"/>: <c>model_index.json</c>, and per component its configs, tokenizer
    /// files and <c>.safetensors</c> weights (the <see cref="ModelHubOptions.Variant"/> when asked). Each file is
    /// checked against the size and hash the hub lists (sha256 for Git LFS files, the Git blob id otherwise).
    /// Files already in the cache are not downloaded again, and an interrupted download resumes where it stopped.
    /// With <see cref="ModelHubOptions.Offline"/> the cached snapshot is returned without reaching the hub.
    /// </summary>
    /// <param name="repoId">The repository, e.g. <c>stable-diffusion-v1-5/stable-diffusion-v1-5</c>.</param>
    /// <param name="options">Revision, variant, endpoint, token and cache folder; defaults from the environment.</param>
    /// <param name="progress">Receives the progress, at most about once per MiB and once per file.</param>
    /// <param name="cancellationToken">Stops the download; what was downloaded is kept for the next call to resume.</param>
    /// <returns>The snapshot folder (<c>.../snapshots/{commit}</c>), which <c>StableDiffusionPipeline.LoadAsync</c> loads.</returns>
    /// <exception cref="ArgumentException">A malformed repository id, revision or variant.</exception>
    /// <exception cref="IOException">The hub could not be reached, or answered with an error (e.g. an unknown repository or no access), or (offline) the cache has no snapshot.</exception>
    /// <exception cref="InvalidDataException">A file's size or hash differs from what the hub lists, or the hub's answers are malformed.</exception>
    /// <exception cref="NotSupportedException">A component has weights only in formats other than .safetensors.</exception>
    public static Task<string> DownloadAsync(string repoId, ModelHubOptions? options = null, IProgress<ModelHubProgress>? progress = null,
        CancellationToken cancellationToken = default)
        => DownloadCoreAsync(repoId, options ?? new ModelHubOptions(), progress, Environment.GetEnvironmentVariable, cancellationToken);

    /// <summary><see cref="DownloadAsync(string, ModelHubOptions?, IProgress{ModelHubProgress}?, CancellationToken)"/> with the environment given (for tests).</summary>
    internal static async Task<string> DownloadCoreAsync(string repoId, ModelHubOptions options, IProgress<ModelHubProgress>? progress,
        Func<string, string?> environment, CancellationToken ct)
    {
        Validate(repoId, options);
        var cache = new HubCache(CacheDirectory(options, environment), repoId);
        if (IsOffline(options, environment))
            return cache.FindSnapshot(options.Revision, [HubFileSelection.ModelIndex])
                ?? throw new IOException($"'{repoId}' (revision '{options.Revision}') is not in the hub cache {cache.Root}, and the hub is not reached offline ({OfflineReason(options)}).");

        var hub = OpenSession(repoId, options, environment);
        string commit = await hub.CommitAsync(options.Revision, ct).ConfigureAwait(false);
        var files = await hub.TreeAsync(commit, ct).ConfigureAwait(false);
        var index = files.FirstOrDefault(f => f.Path == HubFileSelection.ModelIndex)
            ?? throw new InvalidDataException($"'{repoId}' at '{options.Revision}' is not a diffusers pipeline: it has no {HubFileSelection.ModelIndex}.");
        string indexBlob = await FetchAsync(hub, cache, commit, index, null, ct).ConfigureAwait(false);
        var components = HubFileSelection.Components(await File.ReadAllTextAsync(indexBlob, ct).ConfigureAwait(false), repoId);
        var selected = HubFileSelection.Select(files, components, options.Variant, repoId);
        await FetchAllAsync(hub, cache, commit, selected, progress, ct).ConfigureAwait(false);
        cache.WriteRef(options.Revision, commit);
        return cache.Snapshot(commit);
    }

    /// <summary>
    /// Downloads the named files of any hub repository (<c>org/name</c>, diffusers or not) at
    /// <see cref="ModelHubOptions.Revision"/>, e.g. a tokenizer's <c>vocab.json</c> and <c>merges.txt</c>, each checked
    /// against the size and hash the hub lists. Files already in the cache are not downloaded again. With
    /// <see cref="ModelHubOptions.Offline"/>, the cached snapshot that holds them all is returned without reaching the hub.
    /// </summary>
    /// <param name="repoId">The repository, e.g. <c>openai/clip-vit-large-patch14</c>.</param>
    /// <param name="paths">The files, relative to the repository's root with '/' separators, e.g. <c>tokenizer/vocab.json</c>.</param>
    /// <param name="options">Revision, endpoint, token, cache folder and offline mode; defaults from the environment (<see cref="ModelHubOptions.Variant"/> is not used).</param>
    /// <param name="progress">Receives the progress, at most about once per MiB and once per file.</param>
    /// <param name="cancellationToken">Stops the download; what was downloaded is kept for the next call to resume.</param>
    /// <returns>The snapshot folder (<c>.../snapshots/{commit}</c>) that holds the files.</returns>
    /// <exception cref="ArgumentException">A malformed repository id or revision, no paths, or a path that is absolute or leaves the repository.</exception>
    /// <exception cref="FileNotFoundException">The repository has no such file at that revision.</exception>
    /// <exception cref="IOException">The hub could not be reached or answered with an error, or (offline) the cache lacks a file.</exception>
    /// <exception cref="InvalidDataException">A file's size or hash differs from what the hub lists, or the hub's answers are malformed.</exception>
    public static Task<string> DownloadFilesAsync(string repoId, IReadOnlyList<string> paths, ModelHubOptions? options = null,
        IProgress<ModelHubProgress>? progress = null, CancellationToken cancellationToken = default)
        => DownloadFilesCoreAsync(repoId, paths, options ?? new ModelHubOptions(), progress, Environment.GetEnvironmentVariable, cancellationToken);

    /// <summary><see cref="DownloadFilesAsync"/> with the environment given (for tests).</summary>
    internal static async Task<string> DownloadFilesCoreAsync(string repoId, IReadOnlyList<string> paths, ModelHubOptions options,
        IProgress<ModelHubProgress>? progress, Func<string, string?> environment, CancellationToken ct)
    {
        Validate(repoId, options);
        ArgumentNullException.ThrowIfNull(paths);
        if (paths.Count == 0) throw new ArgumentException("No files to download were named.", nameof(paths));
        foreach (var path in paths)
            if (string.IsNullOrWhiteSpace(path) || path.StartsWith('/') || path.Contains('\\') || path.Split('/').Any(part => part is "" or "." or "..") || path.Any(char.IsControl))
                throw new ArgumentException($"'{path}' is not a file path inside a repository (relative, '/'-separated, without '.' or '..' parts).", nameof(paths));
        var cache = new HubCache(CacheDirectory(options, environment), repoId);
        if (IsOffline(options, environment))
            return cache.FindSnapshot(options.Revision, paths)
                ?? throw new IOException($"{string.Join(", ", paths)} of '{repoId}' (revision '{options.Revision}') are not in the hub cache {cache.Root}, and the hub is not reached offline ({OfflineReason(options)}).");

        var hub = OpenSession(repoId, options, environment);
        string commit = await hub.CommitAsync(options.Revision, ct).ConfigureAwait(false);
        var files = await hub.TreeAsync(commit, ct).ConfigureAwait(false);
        var selected = paths.Distinct(StringComparer.Ordinal).Select(path => files.FirstOrDefault(f => f.Path == path)
            ?? throw new FileNotFoundException($"'{repoId}' at '{options.Revision}' has no file '{path}'.", path)).ToList();
        await FetchAllAsync(hub, cache, commit, selected, progress, ct).ConfigureAwait(false);
        cache.WriteRef(options.Revision, commit);
        return cache.Snapshot(commit);
    }

    /// <summary>The hub cache folder the options name, else the one the environment names.</summary>
    internal static string CacheDirectory(ModelHubOptions options, Func<string, string?> environment)
        => options.CacheDirectory ?? HubCache.DefaultDirectory(environment);

    /// <summary>Whether the options (else <c>HF_HUB_OFFLINE</c>) say to use only the cache.</summary>
    internal static bool IsOffline(ModelHubOptions options, Func<string, string?> environment)
        => options.Offline ?? HubCache.NonEmpty(environment("HF_HUB_OFFLINE"))?.ToLowerInvariant() is "1" or "true" or "yes" or "on";

    private static string OfflineReason(ModelHubOptions options)
        => options.Offline is true ? "ModelHubOptions.Offline is set" : "HF_HUB_OFFLINE is set";

    private static void Validate(string repoId, ModelHubOptions options)
    {
        ArgumentNullException.ThrowIfNull(repoId);
        if (!RepoIdPattern().IsMatch(repoId) || repoId.Contains("..", StringComparison.Ordinal) || repoId.Contains("--", StringComparison.Ordinal))
            throw new ArgumentException($"'{repoId}' is not a hub repository id (expected org/name, letters, digits, '-', '_' and '.').", nameof(repoId));
        string revision = options.Revision;
        if (string.IsNullOrWhiteSpace(revision) || revision.Contains("..", StringComparison.Ordinal) || revision.Contains('\\')
            || revision.StartsWith('/') || revision.EndsWith('/') || revision.Any(char.IsControl))
            throw new ArgumentException($"'{revision}' is not a revision (a branch, tag or commit hash).", nameof(options));
        if (options.Variant is { } v && (v.Length == 0 || !v.All(c => char.IsAsciiLetterOrDigit(c) || c == '_')))
            throw new ArgumentException($"'{v}' is not a weights variant (e.g. fp16).", nameof(options));
    }

    private static Session OpenSession(string repoId, ModelHubOptions options, Func<string, string?> environment) => new(
        repoId,
        (options.Endpoint ?? HubCache.NonEmpty(environment("HF_ENDPOINT")) ?? DefaultEndpoint).TrimEnd('/'),
        options.Token ?? HubCache.NonEmpty(environment("HF_TOKEN")) ?? HubCache.NonEmpty(environment("HUGGING_FACE_HUB_TOKEN")) ?? TokenFile(environment),
        options.HttpClient ?? SharedClient.Value);

    private static async Task FetchAllAsync(Session hub, HubCache cache, string commit, IReadOnlyList<HubFile> selected, IProgress<ModelHubProgress>? progress, CancellationToken ct)
    {
        long total = selected.Sum(f => f.Size), before = 0;
        for (int i = 0; i < selected.Count; i++)
        {
            var file = selected[i];
            long start = before;
            int at = i;
            var fileProgress = progress is null ? null : new Action<long>(done =>
                progress.Report(new ModelHubProgress(file.Path, at, selected.Count, done, file.Size, start + done, total)));
            await FetchAsync(hub, cache, commit, file, fileProgress, ct).ConfigureAwait(false);
            before += file.Size;
        }
    }

    /// <summary>Makes one file present in the cache (blob and snapshot link); returns the blob's path.</summary>
    private static async Task<string> FetchAsync(Session hub, HubCache cache, string commit, HubFile file, Action<long>? progress, CancellationToken ct)
    {
        string blob = cache.Blob(file.BlobHash);
        if (!(File.Exists(blob) && new FileInfo(blob).Length == file.Size))
        {
            Directory.CreateDirectory(Path.GetDirectoryName(blob)!);
            string partial = blob + ".incomplete";
            await hub.DownloadAsync(commit, file, partial, progress, ct).ConfigureAwait(false);
            Verify(hub.RepoId, file, partial);
            File.Move(partial, blob, overwrite: true);
        }
        progress?.Invoke(file.Size);
        cache.Link(commit, file.Path, blob);
        return blob;
    }

    /// <summary>Checks the size and hash of a downloaded file; on a mismatch deletes it and throws.</summary>
    private static void Verify(string repoId, HubFile file, string partial)
    {
        long size = new FileInfo(partial).Length;
        if (size < file.Size)
            throw new IOException($"The download of '{file.Path}' of '{repoId}' stopped at {size} of {file.Size} bytes; run again to resume it.");
        string? problem = null;
        if (size != file.Size) problem = $"size mismatch: expected {file.Size} bytes, got {size}";
        else
        {
            string actual = file.IsLfs ? Sha256(partial) : GitBlobId(partial, size);
            if (actual != file.BlobHash) problem = $"{(file.IsLfs ? "sha256" : "git blob id")} mismatch: expected {file.BlobHash}, got {actual}";
        }
        if (problem is null) return;
        File.Delete(partial);
        throw new InvalidDataException($"'{file.Path}' of '{repoId}' failed verification ({problem}); the download was deleted, run again to fetch it anew.");
    }

    private static string Sha256(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        return Convert.ToHexString(SHA256.HashData(stream)).ToLowerInvariant();
    }

    // Git names a file's content sha1("blob {size}\0" + content); the hub lists it as the oid of files outside LFS.
    private static string GitBlobId(string path, long size)
    {
        using var sha1 = IncrementalHash.CreateHash(HashAlgorithmName.SHA1);
        sha1.AppendData(Encoding.ASCII.GetBytes($"blob {size}\0"));
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        var buffer = new byte[1 << 16];
        for (int n; (n = stream.Read(buffer)) > 0;) sha1.AppendData(buffer, 0, n);
        return Convert.ToHexString(sha1.GetHashAndReset()).ToLowerInvariant();
    }

    private static string? TokenFile(Func<string, string?> environment)
    {
        string path = HubCache.NonEmpty(environment("HF_TOKEN_PATH")) ?? Path.Combine(HubCache.HomeDirectory(environment), "token");
        try
        {
            return File.Exists(path) ? HubCache.NonEmpty(File.ReadAllText(path)) : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>The HTTP side: one repository on one endpoint, with its token.</summary>
    private sealed class Session(string repoId, string endpoint, string? token, HttpClient http)
    {
        public string RepoId => repoId;

        /// <summary>The commit hash a revision is at (<c>GET /api/models/{repo}/revision/{revision}</c>).</summary>
        public async Task<string> CommitAsync(string revision, CancellationToken ct)
        {
            using var response = await SendAsync($"{endpoint}/api/models/{repoId}/revision/{Uri.EscapeDataString(revision)}", null, revision, ct).ConfigureAwait(false);
            string json = await response.Content.ReadAsStringAsync(ct).ConfigureAwait(false);
            string? sha = null;
            try
            {
                using var doc = JsonDocument.Parse(json);
                if (doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("sha", out var s) && s.ValueKind == JsonValueKind.String)
                    sha = s.GetString();
            }
            catch (JsonException) { }
            return sha is not null && HubFile.IsHex(sha, 40) ? sha.ToLowerInvariant()
                : throw new InvalidDataException($"The hub's answer about '{repoId}' at '{revision}' has no commit hash ('sha').");
        }

        /// <summary>All files at a commit (<c>GET /api/models/{repo}/tree/{commit}?recursive=true</c>, following the <c>Link: rel="next"</c> pages).</summary>
        public async Task<List<HubFile>> TreeAsync(string commit, CancellationToken ct)
        {
            var files = new List<HubFile>();
            string? url = $"{endpoint}/api/models/{repoId}/tree/{commit}?recursive=true";
            for (int page = 0; url is not null; page++)
            {
                if (page == MaxTreePages) throw new InvalidDataException($"The hub's file list of '{repoId}' has more than {MaxTreePages} pages.");
                using var response = await SendAsync(url, null, commit, ct).ConfigureAwait(false);
                files.AddRange(HubFile.ParseTree(await response.Content.ReadAsStringAsync(ct).ConfigureAwait(false), repoId));
                url = NextPage(response, url);
                // The token goes only to the endpoint: a next page elsewhere is not followed.
                if (url is not null && !SameOrigin(url, endpoint))
                    throw new InvalidDataException($"The hub's file list of '{repoId}' continues at another address ({url}), not under {endpoint}.");
            }
            return files;
        }

        /// <summary>
        /// Downloads a file into <paramref name="partial"/> (<c>GET /{repo}/resolve/{commit}/{path}</c>), continuing
        /// with a <c>Range</c> request from what a previous attempt left there.
        /// </summary>
        public async Task DownloadAsync(string commit, HubFile file, string partial, Action<long>? progress, CancellationToken ct)
        {
            long have = File.Exists(partial) ? new FileInfo(partial).Length : 0;
            if (have > file.Size) { File.Delete(partial); have = 0; }
            if (have == file.Size && have > 0) return; // complete but not yet checked and moved
            string url = $"{endpoint}/{repoId}/resolve/{commit}/{string.Join('/', file.Path.Split('/').Select(Uri.EscapeDataString))}";
            var response = await SendAsync(url, have > 0 ? new RangeHeaderValue(have, null) : null, commit, ct).ConfigureAwait(false);
            if (response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable
                || (response.StatusCode == HttpStatusCode.PartialContent && response.Content.Headers.ContentRange?.From is { } from && from != have))
            {
                // The partial file does not fit the file any more (or the server sent another part): start again.
                response.Dispose();
                File.Delete(partial);
                have = 0;
                response = await SendAsync(url, null, commit, ct).ConfigureAwait(false);
            }
            using var _ = response;
            bool append = have > 0 && response.StatusCode == HttpStatusCode.PartialContent;
            if (!append) have = 0; // the server sent the whole file
            await using var output = new FileStream(partial, append ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16, useAsync: true);
            await using var input = await response.Content.ReadAsStreamAsync(ct).ConfigureAwait(false);
            var buffer = new byte[1 << 16];
            long reported = have;
            progress?.Invoke(have);
            while (true)
            {
                int n;
                try
                {
                    n = await input.ReadAsync(buffer, ct).ConfigureAwait(false);
                }
                catch (Exception e) when (e is IOException or HttpRequestException && !ct.IsCancellationRequested)
                {
                    // What arrived is kept in the partial file: the next attempt asks for the rest.
                    throw new IOException($"The download of '{file.Path}' of '{repoId}' was interrupted at {have} of {file.Size} bytes ({e.Message}); run again to resume it.", e);
                }
                if (n == 0) break;
                await output.WriteAsync(buffer.AsMemory(0, n), ct).ConfigureAwait(false);
                have += n;
                if (have > file.Size) break; // more than listed: verification reports it
                if (have - reported >= ProgressStep) { progress?.Invoke(have); reported = have; }
            }
        }

        private async Task<HttpResponseMessage> SendAsync(string url, RangeHeaderValue? range, string revision, CancellationToken ct)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, url);
            // HttpClient drops the Authorization header when it follows a redirect (to the file CDN, which needs none).
            if (token is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            request.Headers.Range = range;
            HttpResponseMessage response;
            try
            {
                response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct).ConfigureAwait(false);
            }
            catch (HttpRequestException e)
            {
                throw new IOException($"Cannot reach the hub at {endpoint} for '{repoId}': {e.Message}", e);
            }
            catch (TaskCanceledException e) when (!ct.IsCancellationRequested)
            {
                throw new IOException($"The hub at {endpoint} did not answer in time for '{repoId}'.", e);
            }
            if (response.IsSuccessStatusCode || (range is not null && response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable)) return response;
            using (response) throw Failure(response, url, revision);
        }

        private IOException Failure(HttpResponseMessage response, string url, string revision)
        {
            int status = (int)response.StatusCode;
            string code = response.Headers.TryGetValues("X-Error-Code", out var codes) ? codes.FirstOrDefault() ?? "" : "";
            string tokenHint = token is null ? "set HF_TOKEN to an access token" : "check that the token in use grants access";
            string message = code switch
            {
                "RevisionNotFound" => $"Revision '{revision}' of '{repoId}' was not found at {endpoint} (HTTP {status}).",
                "EntryNotFound" => $"A file of '{repoId}' was not found at {endpoint} (HTTP {status}): {url}.",
                "GatedRepo" => $"'{repoId}' is gated: accept its terms at {endpoint}/{repoId} and {tokenHint} (HTTP {status}).",
                _ => status switch
                {
                    401 or 404 => $"Repository '{repoId}' (revision '{revision}') was not found at {endpoint} (HTTP {status}): check the id; a private or gated repository needs a token ({tokenHint}).",
                    403 => $"No access to '{repoId}' at {endpoint} (HTTP 403): {tokenHint}.",
                    _ => $"The hub at {endpoint} answered HTTP {status} ({response.ReasonPhrase}) for '{repoId}': {url}.",
                },
            };
            return new IOException(message);
        }

        private static bool SameOrigin(string url, string endpoint)
            => Uri.TryCreate(url, UriKind.Absolute, out var a) && Uri.TryCreate(endpoint, UriKind.Absolute, out var b)
               && Uri.Compare(a, b, UriComponents.SchemeAndServer, UriFormat.Unescaped, StringComparison.OrdinalIgnoreCase) == 0;

        private static string? NextPage(HttpResponseMessage response, string current)
        {
            if (!response.Headers.TryGetValues("Link", out var links)) return null;
            foreach (var part in links.SelectMany(l => l.Split(',')))
            {
                int open = part.IndexOf('<'), close = part.IndexOf('>');
                if (open < 0 || close < open || !part[close..].Contains("rel=\"next\"", StringComparison.Ordinal)) continue;
                var next = new Uri(new Uri(current), part[(open + 1)..close]);
                return next.AbsoluteUri;
            }
            return null;
        }
    }
}
