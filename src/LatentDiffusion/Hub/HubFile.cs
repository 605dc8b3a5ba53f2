using System.Text.Json;

namespace LatentDiffusion.Hub;

/// <summary>
/// One file of a hub repository as the tree API lists it: its path, size, and the hash that names its blob in the
/// cache (the sha256 of a Git LFS file, otherwise the Git blob id, a sha1 of <c>"blob {size}\0"</c> and the content).
/// </summary>
internal sealed record HubFile(string Path, long Size, string BlobHash, bool IsLfs)
{
    /// <summary>The files of a tree API page (a JSON array); folders are skipped. Malformed entries are errors naming the repository.</summary>
    public static List<HubFile> ParseTree(string json, string repoId)
    {
        var files = new List<HubFile>();
        try
        {
            using var doc = JsonDocument.Parse(json);
            if (doc.RootElement.ValueKind != JsonValueKind.Array)
                throw new InvalidDataException($"The hub's file list of '{repoId}' is not a JSON array.");
            foreach (var entry in doc.RootElement.EnumerateArray())
            {
                if (entry.ValueKind != JsonValueKind.Object || !entry.TryGetProperty("type", out var type) || type.GetString() != "file") continue;
                string path = Text(entry, "path", repoId);
                long size = Number(entry, "size", repoId, path);
                string oid = Text(entry, "oid", repoId);
                bool lfs = entry.TryGetProperty("lfs", out var l) && l.ValueKind == JsonValueKind.Object;
                string hash = lfs ? Text(l, "oid", repoId) : oid;
                if (lfs && l.TryGetProperty("size", out _)) size = Number(l, "size", repoId, path);
                if (!IsHex(hash, lfs ? 64 : 40))
                    throw new InvalidDataException($"The hub lists '{path}' of '{repoId}' with a malformed {(lfs ? "sha256" : "git oid")} '{hash}'.");
                files.Add(new HubFile(path, size, hash.ToLowerInvariant(), lfs));
            }
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"The hub's file list of '{repoId}' is not valid JSON: {e.Message}", e);
        }
        return files;
    }

    /// <summary>Whether <paramref name="s"/> is exactly <paramref name="length"/> hexadecimal digits.</summary>
    public static bool IsHex(string s, int length) => s.Length == length && s.All(char.IsAsciiHexDigit);

    private static string Text(JsonElement e, string name, string repoId)
        => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()!
            : throw new InvalidDataException($"The hub's file list of '{repoId}' has an entry without '{name}'.");

    private static long Number(JsonElement e, string name, string repoId, string path)
        => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out long n) && n >= 0 ? n
            : throw new InvalidDataException($"The hub lists '{path}' of '{repoId}' without a valid '{name}'.");
}
