using System.Buffers.Binary;
using SixLabors.ImageSharp.Metadata.Profiles.Exif;

namespace LatentDiffusion.Pipelines;

/// <summary>
/// The EXIF orientation of a loaded image (1 to 8, 1 being upright): from the decoder's EXIF profile, or for PNG from
/// its uncompressed <c>eXIf</c> chunk, found by walking the chunk list without reading any other chunk's data (the PNG
/// decoder is told to ignore metadata, whose text chunks can be zlib bombs).
/// </summary>
internal static class ExifOrientation
{
    // An EXIF block is at most 64 KiB in JPEG; anything much larger is not a camera's.
    private const int MaxExifBytes = 1 << 20;

    /// <summary>A profile holding only <paramref name="orientation"/>, for <c>AutoOrient</c>.</summary>
    public static ExifProfile Profile(ushort orientation)
    {
        var profile = new ExifProfile();
        profile.SetValue(ExifTag.Orientation, orientation);
        return profile;
    }

    /// <summary>The orientation in <paramref name="profile"/>; null when absent, out of range or unreadable.</summary>
    public static ushort? From(ExifProfile? profile)
    {
        if (profile is null) return null;
        try
        {
            var value = profile.GetValue(ExifTag.Orientation);
            return value is null || value.Value is < 1 or > 8 ? null : value.Value;
        }
        catch (Exception e) when (e is ArgumentException or IndexOutOfRangeException or InvalidOperationException or OverflowException or NotSupportedException or EndOfStreamException)
        {
            return null; // a malformed EXIF block only loses the orientation, as a reader without EXIF support would
        }
    }

    /// <summary>The orientation in the <c>eXIf</c> chunk of the PNG at the stream's position; null when none.</summary>
    public static ushort? FromPng(Stream png)
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
                return ReadExactly(png, data) ? From(new ExifProfile(data)) : null;
            }
            long next = png.Position + length + 4; // data and CRC
            if (next > png.Length) return null;
            png.Position = next;
        }
        return null;
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
