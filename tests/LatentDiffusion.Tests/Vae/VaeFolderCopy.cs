using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using LatentDiffusion.Tests.Pipelines;

namespace LatentDiffusion.Tests.Vae;

/// <summary>A temporary copy of a fixture VAE folder with an edited config or weights file, to test how loading fails.</summary>
internal sealed class VaeFolderCopy : IDisposable
{
    /// <summary>The model name for <see cref="GeneratedModel"/>'s VAE (4 levels of 16/16/32/32 channels, current attention names), which needs no fixtures.</summary>
    public const string Generated = "generated";

    public string Dir { get; }

    private VaeFolderCopy(string dir) => Dir = dir;

    /// <summary>
    /// Copies <c>fixtures/&lt;model&gt;/vae</c>, applying <paramref name="editConfig"/> to config.json and, for the weights,
    /// dropping the tensors in <paramref name="drop"/> and restating the shapes in <paramref name="reshape"/> (same bytes).
    /// </summary>
    public static VaeFolderCopy Of(string model, Action<JsonObject>? editConfig = null, IEnumerable<string>? drop = null,
        IReadOnlyDictionary<string, long[]>? reshape = null)
    {
        string source = model == Generated ? Path.Combine(GeneratedModel.Folder, "vae") : Fixtures.PathOf(model, "vae");
        string dir = Path.Combine(Path.GetTempPath(), "ld-vae-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(source, "config.json")))!.AsObject();
        editConfig?.Invoke(config);
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        RewriteSafetensors(Path.Combine(source, "diffusion_pytorch_model.safetensors"), Path.Combine(dir, "diffusion_pytorch_model.safetensors"),
            new HashSet<string>(drop ?? []), reshape ?? new Dictionary<string, long[]>());
        return new VaeFolderCopy(dir);
    }

    private static void RewriteSafetensors(string from, string to, HashSet<string> drop, IReadOnlyDictionary<string, long[]> reshape)
    {
        var bytes = File.ReadAllBytes(from);
        long headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        var header = JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, (int)headerLength))!.AsObject();
        int dataStart = 8 + (int)headerLength;
        var newHeader = new JsonObject();
        using var data = new MemoryStream();
        foreach (var (name, node) in header)
        {
            if (name == "__metadata__") { newHeader[name] = node!.DeepClone(); continue; }
            if (drop.Contains(name)) continue;
            var entry = node!.AsObject();
            var offsets = entry["data_offsets"]!.AsArray();
            long begin = offsets[0]!.GetValue<long>(), end = offsets[1]!.GetValue<long>();
            long newBegin = data.Position;
            data.Write(bytes, dataStart + (int)begin, (int)(end - begin));
            var shape = reshape.TryGetValue(name, out var s) ? new JsonArray(s.Select(d => (JsonNode)d).ToArray()) : entry["shape"]!.DeepClone();
            newHeader[name] = new JsonObject { ["dtype"] = entry["dtype"]!.GetValue<string>(), ["shape"] = shape, ["data_offsets"] = new JsonArray(newBegin, data.Position) };
        }
        var headerBytes = Encoding.UTF8.GetBytes(newHeader.ToJsonString());
        using var output = File.Create(to);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)headerBytes.Length);
        output.Write(length);
        output.Write(headerBytes);
        data.Position = 0;
        data.CopyTo(output);
    }

    public void Dispose()
    {
        try { Directory.Delete(Dir, recursive: true); } catch (IOException) { }
    }
}
