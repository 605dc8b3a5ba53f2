using System.Buffers.Binary;
using System.Text;
using LatentDiffusion.Cli;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Cli;

/// <summary>Every failure of ldm is one plain <c>error:</c> line and a non-zero exit, never a crash or a stack trace.</summary>
public class CliErrorTests
{
    private string _dir = "";

    [SetUp]
    public void CreateDirectory() => _dir = Directory.CreateTempSubdirectory("ldm-err-").FullName;

    [TearDown]
    public void DeleteDirectory() => Directory.Delete(_dir, recursive: true);

    private static string OneErrorLine(int code, string err)
    {
        Assert.That(code, Is.Not.EqualTo(0));
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(1), err);
        Assert.That(lines[0], Does.StartWith("error: "));
        Assert.That(err, Does.Not.Contain("   at "), "no stack trace without --verbose");
        return lines[0];
    }

    /// <summary>A safetensors file with one tensor whose name holds the byte 0xFF (not UTF-8).</summary>
    private string InvalidUtf8Checkpoint()
    {
        byte[] header = [.. "{\"model.diffusion_model.\u0001.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}"u8];
        header[Array.IndexOf(header, (byte)1)] = 0xFF;
        var file = new byte[8 + header.Length + 4];
        BinaryPrimitives.WriteUInt64LittleEndian(file, (ulong)header.Length);
        header.CopyTo(file, 8);
        string path = Path.Combine(_dir, "bad-name.safetensors");
        File.WriteAllBytes(path, file);
        return path;
    }

    [Test]
    public async Task InfoOnATensorNameThatIsNotUtf8GivesOneErrorLine()
    {
        var (code, stdout, err) = await CliTests.Run("info", "--model", InvalidUtf8Checkpoint());
        OneErrorLine(code, err);
        Assert.That(stdout, Is.Empty);
    }

    [Test]
    public async Task GenerateOnATensorNameThatIsNotUtf8GivesOneErrorLine()
    {
        var (code, _, err) = await CliTests.Run("generate", "--model", InvalidUtf8Checkpoint(), "--config", Fixtures.PathOf("tiny-sd15"), "--prompt", "x", "--output", Path.Combine(_dir, "o.png"));
        OneErrorLine(code, err);
        Assert.That(File.Exists(Path.Combine(_dir, "o.png")), Is.False);
    }

    [Test]
    public async Task TokenizeWithAMissingModelGivesOneErrorLine()
    {
        var (code, _, err) = await CliTests.Run("tokenize", "--model", Path.Combine(_dir, "nope"), "a cat");
        Assert.That(OneErrorLine(code, err), Does.Contain("nope"));
    }

    [Test]
    public async Task VerboseAddsTheStackTraceAfterTheErrorLine()
    {
        var (code, _, err) = await CliTests.Run("info", "--verbose", "--model", InvalidUtf8Checkpoint());
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(err, Does.StartWith("error: ").And.Contain("   at "));
    }

    [Test]
    public void WrappersAreTakenOffAndInnerMessagesKept()
    {
        var e = new AggregateException(new TypeInitializationException("Some.Type", new InvalidDataException("'m.safetensors' is broken.", new DecoderFallbackException("Unable to translate bytes [FF]."))));
        Assert.That(ErrorMessage.Describe(e), Is.EqualTo("'m.safetensors' is broken: Unable to translate bytes [FF]."));
    }

    [Test]
    public void ParameterDecorationsAreRemoved()
    {
        var e = new ArgumentOutOfRangeException("Steps", 0, "Steps must be at least 1.");
        Assert.That(e.Message, Does.Contain("(Parameter 'Steps')"), "what .NET makes of it");
        Assert.That(ErrorMessage.Describe(e), Is.EqualTo("Steps must be at least 1; got 0."));
        Assert.That(ErrorMessage.Describe(new ArgumentException("Width must be a positive multiple of 8; got 100.", "options")), Is.EqualTo("Width must be a positive multiple of 8; got 100."));
    }

    [Test]
    public void UnexpectedExceptionsAreNamedOnOneLine()
    {
        var e = new InvalidOperationException("Cannot transcode invalid UTF-8 JSON text to UTF-16 string.", new DecoderFallbackException("Unable to translate bytes [FF] at index 22\nfrom specified code page to Unicode."));
        Assert.That(ErrorMessage.Describe(e), Is.EqualTo("unexpected InvalidOperationException: Cannot transcode invalid UTF-8 JSON text to UTF-16 string: Unable to translate bytes [FF] at index 22 from specified code page to Unicode."));
    }

    [Test]
    public async Task ParseErrorsAreOneLineInWords()
    {
        var (code, _, err) = await CliTests.Run("generate", "--prompt", "x", "--steps", "abc", "--count", "zz");
        Assert.That(code, Is.EqualTo(2));
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(1), err);
        Assert.That(lines[0], Does.StartWith("error: ").And.Contain("'abc'").And.Contain("'zz'").And.Contain("a whole number").And.Not.Contain("System.Int32"));
    }
}
