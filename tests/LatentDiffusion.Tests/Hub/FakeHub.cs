using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace LatentDiffusion.Tests.Hub;

/// <summary>
/// A fake Hugging Face Hub on a loopback port: the revision and tree APIs and <c>resolve</c> downloads of one
/// repository, as the real hub answers them (Git LFS files redirect to a "CDN" path; <c>Range</c> is honoured).
/// Every request is recorded.
/// </summary>
internal sealed class FakeHub : IDisposable
{
    public const string Commit = "3f2a6b1c9d8e7f60514a3b2c1d0e9f8a7b6c5d4e";

    private readonly HttpListener _listener = new();
    private readonly Task _loop;
    private readonly List<Request> _requests = [];

    public sealed record Request(string Path, string Query, string? Range, string? Authorization);

    public FakeHub(string repoId, IReadOnlyDictionary<string, byte[]> files, IReadOnlySet<string> lfs)
    {
        RepoId = repoId;
        Files = files;
        Lfs = lfs;
        for (int attempt = 0; ; attempt++)
        {
            int port = FreePort();
            _listener.Prefixes.Clear();
            _listener.Prefixes.Add($"http://127.0.0.1:{port}/");
            try
            {
                _listener.Start();
                Endpoint = $"http://127.0.0.1:{port}";
                break;
            }
            catch (HttpListenerException) when (attempt < 5) { }
        }
        _loop = Task.Run(ServeAsync);
    }

    public string RepoId { get; }
    public string Endpoint { get; } = "";
    public IReadOnlyDictionary<string, byte[]> Files { get; }
    public IReadOnlySet<string> Lfs { get; }

    /// <summary>Files served with one byte changed (same size): a corrupted transfer.</summary>
    public HashSet<string> Corrupt { get; } = [];

    /// <summary>Files whose next download stops after half of the bytes (the connection is dropped), once each.</summary>
    public HashSet<string> Interrupt { get; } = [];

    /// <summary>Answer range requests with the whole file (200), as some servers do.</summary>
    public bool IgnoreRange { get; set; }

    /// <summary>The address the tree API's <c>Link: rel="next"</c> points at; default this server.</summary>
    public string? NextPageBase { get; set; }

    /// <summary>The tree API answers in pages of this many entries (with a <c>Link: rel="next"</c> header).</summary>
    public int PageSize { get; set; } = int.MaxValue;

    public List<Request> Requests { get { lock (_requests) return [.. _requests]; } }

    /// <summary>The requests for a file's content (resolve, and the CDN it redirects to).</summary>
    public List<Request> Downloads(string? path = null)
        => Requests.Where(r => r.Path.StartsWith($"/{RepoId}/resolve/", StringComparison.Ordinal) && (path is null || r.Path.EndsWith("/" + path, StringComparison.Ordinal))).ToList();

    public static string Sha256(byte[] data) => Convert.ToHexStringLower(SHA256.HashData(data));

    public static string GitBlobId(byte[] data)
        => Convert.ToHexStringLower(SHA1.HashData([.. Encoding.ASCII.GetBytes($"blob {data.Length}\0"), .. data]));

    private static int FreePort()
    {
        var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        int port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        return port;
    }

    private async Task ServeAsync()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext context;
            try { context = await _listener.GetContextAsync(); }
            catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException) { return; }
            try { Handle(context); }
            catch (Exception e) when (e is HttpListenerException or IOException) { } // the client went away
            finally { try { context.Response.Close(); } catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException) { } }
        }
    }

    private void Handle(HttpListenerContext context)
    {
        var request = context.Request;
        var response = context.Response;
        string path = Uri.UnescapeDataString(request.Url!.AbsolutePath);
        lock (_requests) _requests.Add(new Request(path, request.Url.Query, request.Headers["Range"], request.Headers["Authorization"]));

        string api = $"/api/models/{RepoId}/";
        if (path.StartsWith(api + "revision/", StringComparison.Ordinal))
        {
            string revision = path[(api.Length + "revision/".Length)..];
            if (revision is "main" or Commit) Json(response, JsonSerializer.Serialize(new { id = RepoId, sha = Commit }));
            else Error(response, 404, "RevisionNotFound");
        }
        else if (path == api + "tree/" + Commit && request.QueryString["recursive"] == "true")
        {
            int start = int.Parse(request.QueryString["cursor"] ?? "0");
            var entries = Tree();
            var page = entries.Skip(start).Take(PageSize).ToList();
            if (start + page.Count < entries.Count)
                response.AddHeader("Link", $"<{NextPageBase ?? Endpoint}{api}tree/{Commit}?recursive=true&cursor={start + page.Count}>; rel=\"next\"");
            Json(response, JsonSerializer.Serialize(page));
        }
        else if (path.StartsWith($"/{RepoId}/resolve/{Commit}/", StringComparison.Ordinal))
        {
            string file = path[$"/{RepoId}/resolve/{Commit}/".Length..];
            if (!Files.ContainsKey(file)) { Error(response, 404, "EntryNotFound"); return; }
            if (Lfs.Contains(file) && request.QueryString["cdn"] is null)
            {
                // The real hub sends LFS files from a CDN, by a redirect.
                response.StatusCode = 302;
                response.AddHeader("Location", $"{Endpoint}/{RepoId}/resolve/{Commit}/{file}?cdn=1");
                return;
            }
            response.AddHeader("X-Repo-Commit", Commit);
            bool interrupt;
            lock (Interrupt) interrupt = Interrupt.Remove(file);
            Content(request, response, Served(file), interrupt, IgnoreRange);
        }
        else Error(response, path.StartsWith("/api/models/", StringComparison.Ordinal) ? 401 : 404, "RepoNotFound");
    }

    private byte[] Served(string file)
    {
        var data = Files[file];
        if (!Corrupt.Contains(file)) return data;
        var bad = data.ToArray();
        bad[bad.Length / 2] ^= 0xFF;
        return bad;
    }

    private List<object> Tree()
    {
        var entries = new List<object>();
        foreach (var dir in Files.Keys.Where(k => k.Contains('/')).Select(k => k[..k.IndexOf('/')]).Distinct().Order(StringComparer.Ordinal))
            entries.Add(new { type = "directory", oid = new string('d', 40), size = 0, path = dir });
        foreach (var (path, data) in Files.OrderBy(f => f.Key, StringComparer.Ordinal))
        {
            if (Lfs.Contains(path))
                entries.Add(new { type = "file", oid = GitBlobId(Encoding.ASCII.GetBytes("pointer " + path)), size = data.Length, path,
                    lfs = new { oid = Sha256(data), size = data.Length, pointerSize = 134 } });
            else
                entries.Add(new { type = "file", oid = GitBlobId(data), size = data.Length, path });
        }
        return entries;
    }

    private static void Content(HttpListenerRequest request, HttpListenerResponse response, byte[] data, bool interrupt, bool ignoreRange)
    {
        int start = 0;
        if (!ignoreRange && request.Headers["Range"] is { } range && range.StartsWith("bytes=", StringComparison.Ordinal) && range.EndsWith('-'))
        {
            start = int.Parse(range["bytes=".Length..^1]);
            if (start >= data.Length)
            {
                response.StatusCode = 416;
                return;
            }
            response.StatusCode = 206;
            response.AddHeader("Content-Range", $"bytes {start}-{data.Length - 1}/{data.Length}");
        }
        response.ContentLength64 = data.Length - start;
        if (interrupt)
        {
            response.OutputStream.Write(data, start, (data.Length - start) / 2);
            response.OutputStream.Flush();
            response.Abort();
            return;
        }
        response.OutputStream.Write(data, start, data.Length - start);
    }

    private static void Json(HttpListenerResponse response, string json)
    {
        var bytes = Encoding.UTF8.GetBytes(json);
        response.ContentType = "application/json";
        response.ContentLength64 = bytes.Length;
        response.OutputStream.Write(bytes);
    }

    private static void Error(HttpListenerResponse response, int status, string code)
    {
        response.StatusCode = status;
        response.AddHeader("X-Error-Code", code);
        Json(response, JsonSerializer.Serialize(new { error = code }));
    }

    public void Dispose()
    {
        _listener.Stop();
        _listener.Close();
        _loop.Wait(TimeSpan.FromSeconds(10));
    }
}
