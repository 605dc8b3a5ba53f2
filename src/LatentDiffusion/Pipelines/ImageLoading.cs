using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Bmp;
using SixLabors.ImageSharp.Formats.Gif;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Pbm;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Formats.Tga;
using SixLabors.ImageSharp.Formats.Tiff;
using SixLabors.ImageSharp.Formats.Webp;
using SixLabors.ImageSharp.Metadata;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace LatentDiffusion.Pipelines;

/// <summary>
/// Reads user-supplied images defensively: size checked from the header before any pixels are decoded, pixel data
/// and orientation only (no compressed metadata is inflated), first frame only.
/// </summary>
public static class ImageLoading
{
    /// <summary>The largest side accepted for an input image, in pixels.</summary>
    public const int MaxInputSide = 8192;

    /// <summary>The largest input file accepted, in bytes.</summary>
    public const long MaxInputBytes = 256L * 1024 * 1024;

    // PNG text chunks (zTXt, compressed iTXt) are zlib streams the decoder would inflate whole into strings: a 64 KB
    // file cost 1.7 GB. PNG metadata is skipped; its one useful field, the EXIF orientation, is read by ExifOrientation
    // from the uncompressed eXIf chunk. Multi-frame formats give their first frame only (what the pipeline uses).
    private static readonly Configuration Decoding = CreateConfiguration();

    private static Configuration CreateConfiguration()
    {
        // A configuration of its own: Configuration.Default.Clone() shares the default's ImageFormatsManager, so setting
        // decoders on the clone would make every Image.Load in the app skip PNG metadata.
        var configuration = new Configuration(new PngConfigurationModule(), new JpegConfigurationModule(), new GifConfigurationModule(), new BmpConfigurationModule(),
            new PbmConfigurationModule(), new TgaConfigurationModule(), new TiffConfigurationModule(), new WebpConfigurationModule());
        configuration.ImageFormatsManager.SetDecoder(PngFormat.Instance, new PngDecoder { IgnoreMetadata = true });
        configuration.ImageFormatsManager.SetDecoder(GifFormat.Instance, new GifDecoder { DecodingMode = FrameDecodingMode.First, IgnoreMetadata = true });
        configuration.ImageFormatsManager.SetDecoder(TiffFormat.Instance, new TiffDecoder { DecodingMode = FrameDecodingMode.First });
        return configuration;
    }

    /// <summary>Loads an image file as 8-bit RGB, turned upright by its EXIF orientation.</summary>
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

    /// <summary>
    /// Loads an image from a stream as 8-bit RGB, turned upright by its EXIF orientation (as the reference's
    /// <c>load_image</c> does); <paramref name="name"/> is used in messages.
    /// </summary>
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
            var info = Image.Identify(Decoding, stream, out var format) ?? throw new InvalidDataException($"'{name}' is not an image in a known format (PNG, JPEG, BMP, GIF, TGA, TIFF, WebP, PBM).");
            if (info.Width <= 0 || info.Height <= 0 || info.Width > MaxInputSide || info.Height > MaxInputSide)
                throw new InvalidDataException($"'{name}' is {info.Width}x{info.Height} pixels; each side must be between 1 and {MaxInputSide}.");
            stream.Position = start;
            var image = Image.Load<Rgb24>(Decoding, stream);
            try
            {
                ushort? orientation;
                if (format is PngFormat)
                {
                    stream.Position = start;
                    orientation = ExifOrientation.FromPng(stream);
                }
                else
                {
                    // TIFF keeps its tags with the frame, the other formats with the image.
                    orientation = ExifOrientation.From(image.Metadata.ExifProfile) ?? ExifOrientation.From(image.Frames.RootFrame.Metadata.ExifProfile);
                }
                if (orientation is > 1)
                {
                    image.Metadata.ExifProfile = ExifOrientation.Profile(orientation.Value);
                    image.Mutate(x => x.AutoOrient());
                }
                return image;
            }
            catch
            {
                image.Dispose();
                throw;
            }
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
