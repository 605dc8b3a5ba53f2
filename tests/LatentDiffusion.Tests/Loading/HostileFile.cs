using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;

namespace LatentDiffusion.Tests.Loading;

/// <summary>Writes edited copies of safetensors files (extra tensors, changed dtypes, overwritten data) and raw headers, to test how loading fails.</summary>
internal static class HostileFile
{
    /// <summary>
    /// Copies <paramref name="from"/> to <paramref name="to"/>, letting <paramref name="edit"/> change the header and the data
    /// section in place, then appending <paramref name="extras"/>.
    /// </summary>
    public static void Copy(string from, string to, Action<JsonObject, byte[]>? edit = null, params TestSafetensorsWriter.Tensor[] extras)
    {
        var bytes = File.ReadAllBytes(from);
        int headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        var header = JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, headerLength))!.AsObject();
        var data = bytes[(8 + headerLength)..];
        edit?.Invoke(header, data);
        using var extra = new MemoryStream();
        foreach (var t in extras)
        {
            long begin = data.Length + extra.Length;
            header[t.Name] = new JsonObject
            {
                ["dtype"] = t.DType,
                ["shape"] = new JsonArray(t.Shape.Select(d => (JsonNode)d).ToArray()),
                ["data_offsets"] = new JsonArray(begin, begin + t.Data.Length),
            };
            extra.Write(t.Data);
        }
        WriteRaw(to, Encoding.UTF8.GetBytes(header.ToJsonString()), [.. data, .. extra.ToArray()]);
    }

    /// <summary>Writes a file from raw header bytes (padded with spaces to 8 bytes) and data.</summary>
    public static void WriteRaw(string path, byte[] header, byte[] data)
    {
        int padded = (header.Length + 7) / 8 * 8;
        using var stream = File.Create(path);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)padded);
        stream.Write(length);
        stream.Write(header);
        for (int i = header.Length; i < padded; i++) stream.WriteByte((byte)' ');
        stream.Write(data);
    }

    /// <summary>The byte range of tensor <paramref name="name"/> in the data section.</summary>
    public static (int Begin, int End) Range(JsonObject header, string name)
    {
        var offsets = header[name]!["data_offsets"]!.AsArray();
        return ((int)offsets[0]!.GetValue<long>(), (int)offsets[1]!.GetValue<long>());
    }

    /// <summary>Copies a diffusers folder (files only, one level of component folders) so a test can edit it.</summary>
    public static void CopyFolder(string from, string to)
    {
        foreach (var dir in Directory.GetDirectories(from, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, dir)));
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from, "*", SearchOption.AllDirectories))
            File.Copy(file, Path.Combine(to, Path.GetRelativePath(from, file)));
    }
}
