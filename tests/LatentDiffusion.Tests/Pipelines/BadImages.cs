using System.Buffers.Binary;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary>A small corpus of corrupt and crafted image files.</summary>
public static class BadImages
{
    /// <summary>A PNG signature and an IHDR chunk (valid CRC) claiming the given size, then nothing.</summary>
    public static byte[] PngHeader(int width, int height)
    {
        var ihdr = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(ihdr, width);
        BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(4), height);
        ihdr[8] = 8; ihdr[9] = 2;
        return [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A, .. PngChunk("IHDR", ihdr)];
    }

    /// <summary>One PNG chunk: length, type, data and a valid CRC.</summary>
    public static byte[] PngChunk(string type, byte[] data)
    {
        var len = new byte[4]; BinaryPrimitives.WriteInt32BigEndian(len, data.Length);
        var typeAndData = System.Text.Encoding.ASCII.GetBytes(type).Concat(data).ToArray();
        var crc = new byte[4]; BinaryPrimitives.WriteUInt32BigEndian(crc, Crc32(typeAndData));
        return [.. len, .. typeAndData, .. crc];
    }

    /// <summary>
    /// A valid 1x1 RGB PNG (one orange pixel) with <paramref name="extraChunks"/> placed between its header and its
    /// pixel data.
    /// </summary>
    public static byte[] OnePixelPng(params byte[][] extraChunks)
    {
        var png = new List<byte>(PngHeader(1, 1));
        foreach (var chunk in extraChunks) png.AddRange(chunk);
        png.AddRange(PngChunk("IDAT", Zlib([0, 255, 128, 0])));
        png.AddRange(PngChunk("IEND", []));
        return [.. png];
    }

    /// <summary>A zlib stream of <paramref name="data"/> at the best compression.</summary>
    public static byte[] Zlib(byte[] data)
    {
        var output = new MemoryStream();
        using (var z = new System.IO.Compression.ZLibStream(output, System.IO.Compression.CompressionLevel.SmallestSize, leaveOpen: true))
            z.Write(data);
        return output.ToArray();
    }

    /// <summary>Named bad files: each must give an InvalidDataException, never a crash or a hang.</summary>
    public static IEnumerable<(string Name, byte[] Bytes)> Corpus()
    {
        yield return ("empty", []);
        yield return ("random bytes", Enumerable.Range(0, 512).Select(i => (byte)(i * 37 % 251)).ToArray());
        yield return ("PNG signature only", [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A]);
        yield return ("PNG header claiming 100000x100000", PngHeader(100_000, 100_000));
        yield return ("PNG header claiming 64x64 with no data", PngHeader(64, 64));
        yield return ("PNG header claiming 0x0", PngHeader(0, 0));
        yield return ("truncated JPEG", [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, (byte)'J', (byte)'F', (byte)'I', (byte)'F', 0x00]);
        yield return ("BMP header claiming 1000000x1000000", BmpHeader(1_000_000, 1_000_000));
        yield return ("GIF header only", "GIF89a"u8.ToArray().Concat(new byte[] { 0x10, 0x27, 0x10, 0x27, 0, 0, 0 }).ToArray());
    }

    private static uint Crc32(byte[] data)
    {
        uint crc = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB88320 : crc >> 1;
        }
        return ~crc;
    }

    private static byte[] BmpHeader(int width, int height)
    {
        var b = new byte[54];
        b[0] = (byte)'B'; b[1] = (byte)'M';
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(2), 54);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(10), 54);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(14), 40);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(18), width);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(22), height);
        BinaryPrimitives.WriteInt16LittleEndian(b.AsSpan(26), 1);
        BinaryPrimitives.WriteInt16LittleEndian(b.AsSpan(28), 24);
        return b;
    }
}
