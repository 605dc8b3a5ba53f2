using System.Buffers.Binary;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Formats;

/// <summary>
/// Writes <c>.safetensors</c> files that the reference readers (and <see cref="SafetensorsFile"/>) accept: an 8-byte
/// little-endian header length, a JSON header padded with spaces to a multiple of 8 bytes, then the tensors' bytes.
/// </summary>
/// <remarks>
/// The header lists <c>__metadata__</c> first and then the tensors by name (ordinal order). The data section is laid
/// out by element size, largest first, then by name, as the reference writer does, so that every tensor starts at a
/// multiple of its element size and can be used in place from a memory map. The file is written beside the target and
/// moved over it at the end, so an interrupted save never leaves a truncated file under the final name.
/// </remarks>
public static class SafetensorsWriter
{
    private const int ChunkBytes = 1 << 26;

    /// <summary>Saves <paramref name="tensors"/> (any device, any supported dtype) to <paramref name="path"/>, replacing the file if it exists.</summary>
    /// <param name="path">The file to write.</param>
    /// <param name="tensors">The tensors, by name. Their values are copied to the host as stored: no dtype conversion.</param>
    /// <param name="metadata">Optional string map stored as <c>__metadata__</c>.</param>
    /// <exception cref="ArgumentException">A name is empty or <c>__metadata__</c>.</exception>
    /// <exception cref="NotSupportedException">A tensor's dtype has no safetensors equivalent (complex types, for example).</exception>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("Writing safetensors needs a little-endian host.");

        var entries = new List<(string Name, Tensor Tensor, string DType, int ElementSize)>(tensors.Count);
        foreach (var (name, tensor) in tensors)
        {
            if (string.IsNullOrEmpty(name) || name == "__metadata__")
                throw new ArgumentException($"'{name}' cannot be used as a tensor name in a safetensors file.", nameof(tensors));
            ArgumentNullException.ThrowIfNull(tensor, $"{nameof(tensors)}[\"{name}\"]");
            string dtype;
            try { dtype = SafetensorsFile.ToDTypeString(tensor.dtype); }
            catch (InvalidOperationException) { throw new NotSupportedException($"Tensor '{name}' has dtype {tensor.dtype}, which safetensors cannot store."); }
            entries.Add((name, tensor, dtype, (int)tensor.ElementSize));
        }

        // Data layout: largest elements first keeps every tensor aligned to its element size.
        var layout = entries.OrderByDescending(e => e.ElementSize).ThenBy(e => e.Name, StringComparer.Ordinal).ToList();
        var offsets = new Dictionary<string, (long Begin, long End)>(StringComparer.Ordinal);
        long position = 0;
        foreach (var e in layout)
        {
            long bytes = e.Tensor.numel() * e.ElementSize;
            offsets[e.Name] = (position, position + bytes);
            position += bytes;
        }

        byte[] header = BuildHeader(entries.OrderBy(e => e.Name, StringComparer.Ordinal).Select(e => (e.Name, e.DType, e.Tensor.shape, offsets[e.Name])), metadata);

        string full = Path.GetFullPath(path);
        string temp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Span<byte> length = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
                stream.Write(length);
                stream.Write(header);
                foreach (var e in layout) WriteData(stream, e.Tensor);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    private static byte[] BuildHeader(IEnumerable<(string Name, string DType, long[] Shape, (long Begin, long End) Offsets)> entries, IReadOnlyDictionary<string, string>? metadata)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject("__metadata__");
                foreach (var (key, value) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal)) json.WriteString(key, value);
                json.WriteEndObject();
            }
            foreach (var (name, dtype, shape, (begin, end)) in entries)
            {
                json.WriteStartObject(name);
                json.WriteString("dtype", dtype);
                json.WriteStartArray("shape");
                foreach (long d in shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(begin);
                json.WriteNumberValue(end);
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        int padded = (int)((buffer.Length + 7) / 8 * 8);
        var header = new byte[padded];
        buffer.ToArray().CopyTo(header, 0);
        for (long i = buffer.Length; i < padded; i++) header[i] = (byte)' ';
        return header;
    }

    private static unsafe void WriteData(Stream stream, Tensor tensor)
    {
        if (tensor.numel() == 0) return;
        using var scope = NewDisposeScope();
        // detach() gives a new handle, so nothing below can dispose the caller's tensor.
        var host = tensor.detach().cpu().contiguous();
        long bytes = host.numel() * host.ElementSize;
        byte* data = (byte*)Runtime.TorchRuntime.DataPointer(host);
        for (long done = 0; done < bytes;)
        {
            int chunk = (int)Math.Min(bytes - done, ChunkBytes);
            stream.Write(new ReadOnlySpan<byte>(data + done, chunk));
            done += chunk;
        }
    }
}
