using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Formats;

/// <summary>One tensor's entry in a safetensors header.</summary>
/// <param name="Name">The tensor's name.</param>
/// <param name="DType">The safetensors dtype string (<c>F16</c>, <c>BF16</c>, <c>F32</c>, ...).</param>
/// <param name="Shape">The tensor's shape.</param>
/// <param name="Begin">Start of the tensor's bytes, relative to the data section.</param>
/// <param name="End">End (exclusive) of the tensor's bytes, relative to the data section.</param>
public sealed record SafetensorsEntry(string Name, string DType, long[] Shape, long Begin, long End)
{
    /// <summary>The TorchSharp scalar type of the stored data.</summary>
    public ScalarType ScalarType => SafetensorsFile.ToScalarType(DType);

    /// <summary>Number of elements (product of the shape).</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// A validated, read-only view of a <c>.safetensors</c> file. The header is checked completely when the file is
/// opened (lengths, dtypes, offsets in range, no overlaps, byte counts that match the shapes), so a corrupt or
/// hostile file fails with an <see cref="InvalidDataException"/> naming the file and the tensor, before anything
/// is allocated from its numbers; the header must also be valid UTF-8 and name each tensor once. Tensors are then
/// read one at a time, straight into their TorchSharp storage.
/// </summary>
public sealed class SafetensorsFile : IDisposable
{
    /// <summary>Largest header accepted (the real SD checkpoints have headers under 1 MiB).</summary>
    public const long MaxHeaderBytes = 100L * 1024 * 1024;

    private readonly FileStream _stream;
    private readonly long _dataStart;
    private readonly Dictionary<string, SafetensorsEntry> _entries;

    /// <summary>The file's path.</summary>
    public string Path { get; }

    /// <summary>The tensors in the file, by name.</summary>
    public IReadOnlyDictionary<string, SafetensorsEntry> Entries => _entries;

    /// <summary>The optional <c>__metadata__</c> string map.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    private SafetensorsFile(string path, FileStream stream, long dataStart, Dictionary<string, SafetensorsEntry> entries, Dictionary<string, string> metadata)
    {
        Path = path; _stream = stream; _dataStart = dataStart; _entries = entries; Metadata = metadata;
    }

    /// <summary>Opens and validates a safetensors file.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is truncated, corrupt or inconsistent; the message says where.</exception>
    public static SafetensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Safetensors file not found: {path}", path);
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.RandomAccess);
        try
        {
            long length = stream.Length;
            if (length < 8) throw Bad(path, $"the file is {length} bytes, shorter than the 8-byte header length");
            Span<byte> lenBytes = stackalloc byte[8];
            stream.ReadExactly(lenBytes);
            ulong headerLen = BinaryPrimitives.ReadUInt64LittleEndian(lenBytes);
            if (headerLen > (ulong)(length - 8))
                throw Bad(path, $"the header claims {headerLen} bytes but only {length - 8} follow the length field (truncated or not a safetensors file)");
            if (headerLen > MaxHeaderBytes)
                throw Bad(path, $"the header claims {headerLen} bytes, more than the {MaxHeaderBytes} accepted");
            var header = new byte[headerLen];
            stream.ReadExactly(header);
            long dataStart = 8 + (long)headerLen;
            long dataLength = length - dataStart;
            var (entries, metadata) = ParseHeader(path, header, dataLength);
            return new SafetensorsFile(path, stream, dataStart, entries, metadata);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    private static (Dictionary<string, SafetensorsEntry>, Dictionary<string, string>) ParseHeader(string path, byte[] header, long dataLength)
    {
        // The JSON reader checks structure only; a name with an invalid UTF-8 byte would fail later, while being read.
        try { _ = StrictUtf8.GetCharCount(header); }
        catch (DecoderFallbackException e) { throw Bad(path, $"the header is not valid UTF-8 (byte 0x{(e.BytesUnknown is { Length: > 0 } b ? b[0] : 0):X2} at header offset {e.Index}{NameAround(header, e.Index)})"); }
        JsonDocument doc;
        try { doc = JsonDocument.Parse(header); }
        catch (JsonException e) { throw Bad(path, "the header is not valid JSON: " + e.Message); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw Bad(path, "the header is not a JSON object");
            var entries = new Dictionary<string, SafetensorsEntry>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            bool sawMetadata = false;
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                // JSON allows repeated names and the last one would win silently; a tensor listed twice is ambiguous.
                if (entries.ContainsKey(prop.Name) || (prop.Name == "__metadata__" && sawMetadata))
                    throw Bad(path, $"'{prop.Name}' is listed twice in the header");
                if (prop.Name == "__metadata__")
                {
                    sawMetadata = true;
                    if (prop.Value.ValueKind == JsonValueKind.Object)
                        foreach (var m in prop.Value.EnumerateObject())
                            metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : m.Value.GetRawText();
                    continue;
                }
                entries[prop.Name] = ParseEntry(path, prop.Name, prop.Value, dataLength);
            }
            // Offsets must not overlap: sort by start and compare neighbours.
            var sorted = entries.Values.Where(e => e.End > e.Begin).OrderBy(e => e.Begin).ToList();
            for (int i = 1; i < sorted.Count; i++)
                if (sorted[i].Begin < sorted[i - 1].End)
                    throw Bad(path, $"tensors '{sorted[i - 1].Name}' [{sorted[i - 1].Begin}, {sorted[i - 1].End}) and '{sorted[i].Name}' [{sorted[i].Begin}, {sorted[i].End}) overlap");
            return (entries, metadata);
        }
    }

    private static SafetensorsEntry ParseEntry(string path, string name, JsonElement e, long dataLength)
    {
        if (e.ValueKind != JsonValueKind.Object) throw Bad(path, $"tensor '{name}': entry is not an object");
        if (!e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String) throw Bad(path, $"tensor '{name}': missing dtype");
        string dtype = dt.GetString()!;
        int elementSize = ElementSize(dtype) ?? throw Bad(path, $"tensor '{name}': unsupported dtype '{dtype}' (supported: {string.Join(", ", DTypes.Keys)})");
        if (!e.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array) throw Bad(path, $"tensor '{name}': missing shape");
        var shape = new long[sh.GetArrayLength()];
        int k = 0;
        long count = 1;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long v) || v < 0)
                throw Bad(path, $"tensor '{name}': shape entry {d.GetRawText()} is not a non-negative integer");
            shape[k++] = v;
            count = v == 0 || count == 0 ? 0 : (count > long.MaxValue / v ? throw Bad(path, $"tensor '{name}': shape [{string.Join(", ", shape)}] overflows") : count * v);
        }
        if (!e.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw Bad(path, $"tensor '{name}': data_offsets must be [begin, end]");
        if (!off[0].TryGetInt64(out long begin) || !off[1].TryGetInt64(out long end) || begin < 0 || end < begin)
            throw Bad(path, $"tensor '{name}': data_offsets [{off[0].GetRawText()}, {off[1].GetRawText()}] are not an ordered pair of non-negative integers");
        if (end > dataLength)
            throw Bad(path, $"tensor '{name}': data_offsets end {end} is past the end of the data section ({dataLength} bytes; file truncated?)");
        if (count > long.MaxValue / elementSize || end - begin != count * elementSize)
            throw Bad(path, $"tensor '{name}': {dtype} [{string.Join(", ", shape)}] needs {(count <= long.MaxValue / elementSize ? count * elementSize : -1)} bytes but data_offsets give {end - begin}");
        return new SafetensorsEntry(name, dtype, shape, begin, end);
    }

    private static readonly Dictionary<string, (int Size, ScalarType Type)> DTypes = new()
    {
        ["F64"] = (8, ScalarType.Float64), ["F32"] = (4, ScalarType.Float32), ["F16"] = (2, ScalarType.Float16),
        ["BF16"] = (2, ScalarType.BFloat16), ["I64"] = (8, ScalarType.Int64), ["I32"] = (4, ScalarType.Int32),
        ["I16"] = (2, ScalarType.Int16), ["I8"] = (1, ScalarType.Int8), ["U8"] = (1, ScalarType.Byte), ["BOOL"] = (1, ScalarType.Bool),
    };

    private static int? ElementSize(string dtype) => DTypes.TryGetValue(dtype, out var d) ? d.Size : null;

    internal static ScalarType ToScalarType(string dtype) => DTypes[dtype].Type;

    internal static string ToDTypeString(ScalarType type) => DTypes.First(kv => kv.Value.Type == type).Key;

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    // The printable ASCII around an offset of the header, to help find the bad name.
    private static string NameAround(byte[] header, int index)
    {
        int start = Math.Max(0, index - 40), end = Math.Min(header.Length, index + 40);
        var text = new StringBuilder();
        for (int i = start; i < end; i++) text.Append(header[i] is >= 0x20 and < 0x7F ? (char)header[i] : '?');
        return $", near \"{text}\"";
    }

    private static InvalidDataException Bad(string path, string what) => new($"Invalid safetensors file '{path}': {what}.");

    /// <summary>Whether the file holds a tensor of that name.</summary>
    public bool Contains(string name) => _entries.ContainsKey(name);

    /// <summary>
    /// Reads one tensor into CPU memory in its stored dtype, then converts it to <paramref name="dtype"/> and moves it to
    /// <paramref name="device"/> when given. Only this one tensor is held twice at any time.
    /// </summary>
    /// <exception cref="KeyNotFoundException">No tensor of that name; the message names the file.</exception>
    public Tensor Load(string name, ScalarType? dtype = null, Device? device = null)
    {
        if (!_entries.TryGetValue(name, out var entry))
            throw new KeyNotFoundException($"Tensor '{name}' not found in '{Path}'.");
        var t = ReadRaw(entry);
        if ((dtype is null || dtype == t.dtype) && (device is null || device.type == DeviceType.CPU)) return t;
        using (t) return t.to(dtype ?? t.dtype, device ?? t.device);
    }

    private unsafe Tensor ReadRaw(SafetensorsEntry entry)
    {
        var t = empty(entry.Shape, entry.ScalarType);
        long bytes = entry.End - entry.Begin;
        if (bytes == 0) return t;
        byte* dst = (byte*)Runtime.TorchRuntime.DataPointer(t);
        lock (_stream)
        {
            _stream.Position = _dataStart + entry.Begin;
            long done = 0;
            while (done < bytes)
            {
                int chunk = (int)Math.Min(bytes - done, 1 << 26);
                int n = _stream.Read(new Span<byte>(dst + done, chunk));
                if (n <= 0) { t.Dispose(); throw Bad(Path, $"tensor '{entry.Name}': the file ended while reading its data"); }
                done += n;
            }
        }
        return t;
    }

    /// <summary>
    /// Reads <paramref name="count"/> bytes of tensor <paramref name="entry"/>, from <paramref name="offset"/> bytes into its
    /// data, to <paramref name="destination"/> (for loading straight into a model's storage, with no temporary tensor).
    /// </summary>
    internal unsafe void ReadBytes(SafetensorsEntry entry, long offset, byte* destination, long count)
    {
        if (offset < 0 || count < 0 || offset + count > entry.End - entry.Begin)
            throw new ArgumentOutOfRangeException(nameof(count), $"Bytes [{offset}, {offset + count}) are outside tensor '{entry.Name}' ({entry.End - entry.Begin} bytes).");
        lock (_stream)
        {
            _stream.Position = _dataStart + entry.Begin + offset;
            long done = 0;
            while (done < count)
            {
                int chunk = (int)Math.Min(count - done, 1 << 26);
                int n = _stream.Read(new Span<byte>(destination + done, chunk));
                if (n <= 0) throw Bad(Path, $"tensor '{entry.Name}': the file ended while reading its data");
                done += n;
            }
        }
    }

    /// <summary>Closes the file.</summary>
    public void Dispose() => _stream.Dispose();
}
