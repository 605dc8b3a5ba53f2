using LatentDiffusion.Pipelines;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Formats.Webp;
using SixLabors.ImageSharp.Metadata.Profiles.Exif;
using SixLabors.ImageSharp.PixelFormats;

namespace LatentDiffusion.Tests.Pipelines;

public class ImageLoadingTests
{
    public static IEnumerable<TestCaseData> Corpus() => BadImages.Corpus().Select(c => new TestCaseData(c.Bytes).SetName("bad image: " + c.Name));

    [TestCaseSource(nameof(Corpus))]
    public void CorruptOrCraftedImagesGiveInvalidDataException(byte[] bytes)
    {
        using var stream = new MemoryStream(bytes);
        var e = Assert.Throws<InvalidDataException>(() => ImageLoading.Load(stream, "upload.png"));
        Assert.That(e!.Message, Does.Contain("upload.png"));
    }

    [Test]
    public void MissingFileGivesFileNotFound()
        => Assert.Throws<FileNotFoundException>(() => ImageLoading.Load(Path.Combine(Path.GetTempPath(), "no-such-image-" + Guid.NewGuid() + ".png")));

    private const int TextBombBytes = 64 * 1024 * 1024;

    // 64 MiB of one letter, deflated to about 64 KB: the size of the example.
    private static readonly Lazy<byte[]> TextBomb = new(() =>
    {
        var text = new byte[TextBombBytes];
        Array.Fill(text, (byte)'a');
        return BadImages.Zlib(text);
    });

    public static IEnumerable<TestCaseData> TextBombs()
    {
        yield return new TestCaseData("zTXt").SetName("PNG zTXt chunk inflating to 64 MiB");
        yield return new TestCaseData("iTXt").SetName("PNG compressed iTXt chunk inflating to 64 MiB");
    }

    [TestCaseSource(nameof(TextBombs))]
    public void CompressedTextChunksAreNotInflated(string chunkType)
    {
        byte[] data = chunkType == "zTXt"
            ? [.. "Comment"u8, 0, 0, .. TextBomb.Value]
            // keyword, compression flag 1, method 0, empty language tag, empty translated keyword
            : [.. "Comment"u8, 0, 1, 0, 0, 0, .. TextBomb.Value];
        byte[] png = BadImages.OnePixelPng(BadImages.PngChunk(chunkType, data));
        Assert.That(png.Length, Is.LessThan(100_000), "the file itself is small");

        using var stream = new MemoryStream(png);
        long before = GC.GetAllocatedBytesForCurrentThread();
        using var image = ImageLoading.Load(stream, "bomb.png");
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.That(allocated, Is.LessThan(50L * 1024 * 1024), $"allocated {allocated:N0} bytes to read a {png.Length:N0}-byte PNG");
        Assert.That(image.Width, Is.EqualTo(1));
        Assert.That(image[0, 0], Is.EqualTo(new Rgb24(255, 128, 0)));
    }

    /// <summary>32x16 stored pixels: the top-left 16x8 quarter red, the rest blue; tagged with EXIF orientation 6.</summary>
    private static Image<Rgb24> RightTopImage()
    {
        var image = new Image<Rgb24>(32, 16, new Rgb24(0, 0, 255));
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 16; x++)
                image[x, y] = new Rgb24(255, 0, 0);
        image.Metadata.ExifProfile = new ExifProfile();
        // 6: the stored rows are the picture's right-hand side; shown upright it is turned 90 degrees clockwise.
        image.Metadata.ExifProfile.SetValue(ExifTag.Orientation, (ushort)6);
        return image;
    }

    private static void AssertTurnedClockwise(Image<Rgb24> loaded)
    {
        Assert.That((loaded.Width, loaded.Height), Is.EqualTo((16, 32)), "turned upright: width and height swap");
        // Turned 90 degrees clockwise, the stored top-left quarter is the top-right one.
        bool IsRed(Rgb24 p) => p.R > 200 && p.B < 60;
        bool IsBlue(Rgb24 p) => p.B > 200 && p.R < 60;
        Assert.That(IsRed(loaded[12, 4]), $"top-right is red: {loaded[12, 4]}");
        Assert.That(IsBlue(loaded[4, 4]), $"top-left is blue: {loaded[4, 4]}");
        Assert.That(IsBlue(loaded[12, 24]), $"bottom-right is blue: {loaded[12, 24]}");
        Assert.That(IsBlue(loaded[4, 24]), $"bottom-left is blue: {loaded[4, 24]}");
    }

    [TestCase("jpeg", "APP1 segment")]
    [TestCase("png", "eXIf chunk")]
    [TestCase("tiff", "IFD tag")]
    [TestCase("webp", "EXIF chunk")]
    public void ExifOrientationIsApplied(string format, string where)
    {
        using var stored = RightTopImage();
        using var file = new MemoryStream();
        switch (format)
        {
            case "jpeg": stored.SaveAsJpeg(file, new JpegEncoder { Quality = 95 }); break;
            case "png":
                stored.SaveAsPng(file, new PngEncoder());
                Assert.That(System.Text.Encoding.ASCII.GetString(file.ToArray()), Does.Contain("eXIf"), "the orientation travels in an eXIf chunk");
                break;
            case "tiff": file.Write(UncompressedTiff(stored, orientation: 6)); break; // ImageSharp's encoder drops the tag
            case "webp": stored.SaveAsWebp(file, new WebpEncoder { FileFormat = WebpFileFormatType.Lossless }); break;
        }
        file.Position = 0;
        using var loaded = ImageLoading.Load(file, "photo." + format);
        AssertTurnedClockwise(loaded);
    }

    /// <summary>A baseline little-endian RGB TIFF, one uncompressed strip, with an Orientation tag.</summary>
    private static byte[] UncompressedTiff(Image<Rgb24> image, ushort orientation)
    {
        int w = image.Width, h = image.Height, pixelBytes = w * h * 3;
        var entries = new (ushort Tag, ushort Type, uint Count, uint Value)[]
        {
            (256, 3, 1, (uint)w), (257, 3, 1, (uint)h), (258, 3, 3, 0 /* offset, below */), (259, 3, 1, 1), (262, 3, 1, 2),
            (273, 4, 1, 0 /* offset, below */), (274, 3, 1, orientation), (277, 3, 1, 3), (278, 3, 1, (uint)h),
            (279, 4, 1, (uint)pixelBytes), (284, 3, 1, 1),
        };
        int ifdSize = 2 + entries.Length * 12 + 4;
        uint bitsOffset = (uint)(8 + ifdSize), pixelsOffset = bitsOffset + 6;
        var tiff = new byte[pixelsOffset + pixelBytes];
        "II*\0"u8.CopyTo(tiff);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(tiff.AsSpan(4), 8);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(tiff.AsSpan(8), (ushort)entries.Length);
        for (int i = 0; i < entries.Length; i++)
        {
            var (tag, type, count, value) = entries[i];
            if (tag == 258) value = bitsOffset;
            if (tag == 273) value = pixelsOffset;
            var at = tiff.AsSpan(10 + i * 12);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(at, tag);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(at[2..], type);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(at[4..], count);
            if (type == 3 && count == 1) System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(at[8..], (ushort)value);
            else System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(at[8..], value);
        }
        for (int k = 0; k < 3; k++) System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(tiff.AsSpan((int)bitsOffset + 2 * k), 8);
        image.CopyPixelDataTo(tiff.AsSpan((int)pixelsOffset));
        return tiff;
    }

    [Test]
    public void AnImageWithoutOrientationIsNotTurned()
    {
        using var stored = RightTopImage();
        stored.Metadata.ExifProfile = null;
        using var file = new MemoryStream();
        stored.SaveAsPng(file);
        file.Position = 0;
        using var loaded = ImageLoading.Load(file, "plain.png");
        Assert.That((loaded.Width, loaded.Height), Is.EqualTo((32, 16)));
        Assert.That(loaded[4, 4], Is.EqualTo(new Rgb24(255, 0, 0)));
    }

    [Test]
    public void AnAnimatedGifGivesItsFirstFrameOnly()
    {
        // Every frame of an animation is a full canvas in memory; a GIF of many tiny frames would cost frames x canvas.
        using var animation = new Image<Rgb24>(16, 16, new Rgb24(255, 0, 0));
        for (int i = 0; i < 3; i++)
        {
            using var frame = new Image<Rgb24>(16, 16, new Rgb24(0, 0, 255));
            animation.Frames.AddFrame(frame.Frames.RootFrame);
        }
        using var file = new MemoryStream();
        animation.SaveAsGif(file);
        file.Position = 0;
        using var loaded = ImageLoading.Load(file, "anim.gif");
        Assert.That(loaded.Frames.Count, Is.EqualTo(1));
        Assert.That(loaded[8, 8], Is.EqualTo(new Rgb24(255, 0, 0)));
    }
}
