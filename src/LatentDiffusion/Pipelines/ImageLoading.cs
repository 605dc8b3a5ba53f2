using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace LatentDiffusion.Pipelines;

/// <summary>Reads user-supplied images defensively: size checked from the header before any pixels are decoded.</summary>
public static class ImageLoading
{
    /// <summary>The largest side accepted for an input image, in pixels.</summary>
    public const int MaxInputSide = 8192;

    /// <summary>The largest input file accepted, in bytes.</summary>
    public const long MaxInputBytes = 256L * 1024 * 1024;

    /// <summary>Loads an image file as 8-bit RGB.</summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="InvalidDataException">Not a readable image, or larger than the limits; the message names the file.</exception>
    public static Image<Rgb24> Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Image not found: '{path}'.", path);
        long size = new FileInfo(path).Length;
        if (size > MaxInputBytes) throw new InvalidDataException($"Image '{path}' is {size} bytes, over the {MaxInputBytes}-byte limit.");
        using var stream = File.OpenRead(path);
        return Load(stream, path);
    }

    /// <summary>Loads an image from a seekable stream as 8-bit RGB; <paramref name="name"/> is used in messages.</summary>
    /// <exception cref="InvalidDataException">Not a readable image, or larger than the limits.</exception>
    public static Image<Rgb24> Load(Stream stream, string name = "image")
    {
        ArgumentNullException.ThrowIfNull(stream);
        if (!stream.CanSeek)
        {
            var copy = new MemoryStream();
            CopyLimited(stream, copy, name);
            copy.Position = 0;
            stream = copy;
        }
        long start = stream.Position;
        try
        {
            var info = Image.Identify(stream) ?? throw new InvalidDataException($"'{name}' is not an image in a known format (PNG, JPEG, BMP, GIF, TGA, TIFF, WebP, PBM).");
            if (info.Width <= 0 || info.Height <= 0 || info.Width > MaxInputSide || info.Height > MaxInputSide)
                throw new InvalidDataException($"'{name}' is {info.Width}x{info.Height} pixels; each side must be between 1 and {MaxInputSide}.");
            stream.Position = start;
            return Image.Load<Rgb24>(stream);
        }
        catch (UnknownImageFormatException e) { throw new InvalidDataException($"'{name}' is not an image in a known format: {e.Message}", e); }
        catch (InvalidImageContentException e) { throw new InvalidDataException($"'{name}' is a corrupt image: {e.Message}", e); }
        catch (ImageFormatException e) { throw new InvalidDataException($"'{name}' could not be read as an image: {e.Message}", e); }
        catch (NotSupportedException e) { throw new InvalidDataException($"'{name}' uses an unsupported image feature: {e.Message}", e); }
        catch (Exception e) when (e is InvalidOperationException or IndexOutOfRangeException or ArgumentOutOfRangeException or ArgumentException or OverflowException or EndOfStreamException)
        {
            // Decoders can fail this way on crafted input; it is still the file's fault, not the caller's.
            throw new InvalidDataException($"'{name}' is a corrupt image: {e.Message}", e);
        }
    }

    private static void CopyLimited(Stream from, Stream to, string name)
    {
        var buffer = new byte[81920];
        long total = 0;
        int n;
        while ((n = from.Read(buffer)) > 0)
        {
            total += n;
            if (total > MaxInputBytes) throw new InvalidDataException($"'{name}' is over the {MaxInputBytes}-byte limit.");
            to.Write(buffer, 0, n);
        }
    }
}
