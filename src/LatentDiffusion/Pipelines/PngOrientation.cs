using System.Buffers.Binary;
using SixLabors.ImageSharp.Metadata.Profiles.Exif;

namespace LatentDiffusion.Pipelines;

/// <summary>
/// The EXIF orientation of a PNG, from its uncompressed <c>eXIf</c> chunk, found by walking the chunk list without
/// reading any other chunk's data (the decoder itself is told to ignore PNG metadata, whose text chunks can be zlib
/// bombs).
/// </summary>
internal static class PngOrientation
{
    // An EXIF block is at most 64 KiB in JPEG; anything much larger is not a camera's.
    private const int MaxExifBytes = 1 << 20;

    /// <summary>A profile holding only the orientation tag, or null when the PNG has none (or a malformed one).</summary>
    public static ExifProfile? Read(Stream png)
    {
        Span<byte> head = stackalloc byte[8];
        if (!ReadExactly(png, head)) return null; // the signature, already checked by the decoder
        while (ReadExactly(png, head))
        {
            uint length = BinaryPrimitives.ReadUInt32BigEndian(head);
            if (length > int.MaxValue) return null;
            var type = head[4..8];
            if (type.SequenceEqual("IEND"u8)) return null;
            if (type.SequenceEqual("eXIf"u8))
            {
                if (length > MaxExifBytes) return null;
                var data = new byte[length];
                if (!ReadExactly(png, data)) return null;
                return Orientation(data);
            }
            long next = png.Position + length + 4; // data and CRC
            if (next > png.Length) return null;
            png.Position = next;
        }
        return null;
    }

    private static ExifProfile? Orientation(byte[] data)
    {
        try
        {
            var full = new ExifProfile(data);
            var value = full.GetValue(ExifTag.Orientation);
            if (value is null || value.Value is < 1 or > 8) return null;
            var profile = new ExifProfile();
            profile.SetValue(ExifTag.Orientation, value.Value);
            return profile;
        }
        catch (Exception e) when (e is ArgumentException or IndexOutOfRangeException or InvalidOperationException or OverflowException or NotSupportedException or EndOfStreamException)
        {
            return null; // a malformed EXIF block only loses the orientation, as a reader without EXIF support would
        }
    }

    private static bool ReadExactly(Stream stream, Span<byte> buffer)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int n = stream.Read(buffer[total..]);
            if (n == 0) return false;
            total += n;
        }
        return true;
    }
}
