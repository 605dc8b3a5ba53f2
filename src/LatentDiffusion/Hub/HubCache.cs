namespace LatentDiffusion.Hub;

/// <summary>
/// One repository's folder in the hub cache, laid out as huggingface_hub lays it out so that the tools share it:
/// <c>models--{org}--{name}/blobs/{hash}</c> (the content), <c>snapshots/{commit}/{path}</c> (links to the blobs)
/// and <c>refs/{revision}</c> (the commit a branch or tag was last seen at).
/// </summary>
internal sealed class HubCache(string cacheDirectory, string repoId)
{
    /// <summary>The repository's folder.</summary>
    public string Root { get; } = Path.Combine(cacheDirectory, "models--" + repoId.Replace("/", "--", StringComparison.Ordinal));

    /// <summary>The default cache folder: <c>HF_HUB_CACHE</c>, else <c>HF_HOME/hub</c>, else <c>XDG_CACHE_HOME/huggingface/hub</c>, else <c>~/.cache/huggingface/hub</c>.</summary>
    public static string DefaultDirectory(Func<string, string?> environment)
    {
        if (NonEmpty(environment("HF_HUB_CACHE")) is { } hub) return hub;
        if (NonEmpty(environment("HUGGINGFACE_HUB_CACHE")) is { } legacy) return legacy;
        return Path.Combine(HomeDirectory(environment), "hub");
    }

    /// <summary>The Hugging Face home: <c>HF_HOME</c>, else <c>XDG_CACHE_HOME/huggingface</c>, else <c>~/.cache/huggingface</c>.</summary>
    public static string HomeDirectory(Func<string, string?> environment)
        => NonEmpty(environment("HF_HOME"))
           ?? Path.Combine(NonEmpty(environment("XDG_CACHE_HOME")) ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"), "huggingface");

    /// <summary>The value, or <see langword="null"/> when it is null or blank.</summary>
    public static string? NonEmpty(string? value) => string.IsNullOrWhiteSpace(value) ? null : value.Trim();

    /// <summary>Where the content with this hash is kept.</summary>
    public string Blob(string hash) => Path.Combine(Root, "blobs", hash);

    /// <summary>A commit's snapshot folder.</summary>
    public string Snapshot(string commit) => Path.Combine(Root, "snapshots", commit);

    /// <summary>
    /// A snapshot that holds every one of <paramref name="paths"/>: the one <c>refs/{revision}</c> points at (or the
    /// commit itself), else any other snapshot of the repository (in ordinal order of their commits); null when none.
    /// </summary>
    public string? FindSnapshot(string revision, IReadOnlyList<string> paths)
    {
        bool Holds(string snapshot) => Directory.Exists(snapshot)
            && paths.All(p => File.Exists(Path.Combine(snapshot, p.Replace('/', Path.DirectorySeparatorChar))));
        string? commit = HubFile.IsHex(revision, 40) ? revision.ToLowerInvariant() : ReadRef(revision);
        if (commit is not null && Holds(Snapshot(commit))) return Snapshot(commit);
        string snapshots = Path.Combine(Root, "snapshots");
        if (!Directory.Exists(snapshots)) return null;
        return Directory.GetDirectories(snapshots).Order(StringComparer.Ordinal).FirstOrDefault(Holds);
    }

    private string? ReadRef(string revision)
    {
        string path = Path.Combine(Root, "refs", revision.Replace('/', Path.DirectorySeparatorChar));
        try
        {
            return File.Exists(path) && File.ReadAllText(path).Trim() is var commit && HubFile.IsHex(commit, 40) ? commit.ToLowerInvariant() : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Records that <paramref name="revision"/> is at <paramref name="commit"/> (nothing for a commit hash itself).</summary>
    public void WriteRef(string revision, string commit)
    {
        if (revision == commit) return;
        string path = Path.Combine(Root, "refs", revision.Replace('/', Path.DirectorySeparatorChar));
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        if (File.Exists(path) && File.ReadAllText(path).Trim() == commit) return;
        File.WriteAllText(path, commit);
    }

    /// <summary>
    /// Makes <c>snapshots/{commit}/{path}</c> point at the blob: a relative symbolic link as huggingface_hub makes,
    /// or a copy where links cannot be made (e.g. Windows without developer mode).
    /// </summary>
    public void Link(string commit, string path, string blob)
    {
        string target = Path.Combine(Snapshot(commit), path.Replace('/', Path.DirectorySeparatorChar));
        string dir = Path.GetDirectoryName(target)!;
        Directory.CreateDirectory(dir);
        var existing = new FileInfo(target);
        if (existing.LinkTarget is { } link && Path.GetFullPath(link, dir) == Path.GetFullPath(blob)) return;
        if (existing.LinkTarget is null && existing.Exists && existing.Length == new FileInfo(blob).Length) return; // a copy
        if (existing.Exists || existing.LinkTarget is not null) existing.Delete();
        try
        {
            File.CreateSymbolicLink(target, Path.GetRelativePath(dir, blob));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or PlatformNotSupportedException)
        {
            File.Copy(blob, target, overwrite: true);
        }
    }
}
