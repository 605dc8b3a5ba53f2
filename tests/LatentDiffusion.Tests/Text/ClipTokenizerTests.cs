using LatentDiffusion.Tests.Pipelines;
using System.Text.Json;
using LatentDiffusion.Text;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Text;

public class ClipTokenizerTests
{
    private static readonly Lazy<ClipTokenizer> Sd15 = new(() => ClipTokenizer.FromDirectory(Fixtures.PathOf("tiny-sd15", "tokenizer")));
    private static readonly Lazy<ClipTokenizer> Sd2v = new(() => ClipTokenizer.FromDirectory(Fixtures.PathOf("tiny-sd2v", "tokenizer")));

    private sealed record Case(string Text, int[] Ids, int[] Padded);

    private static List<Case> Cases()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Fixtures.PathOf("tokenizer_cases.json")));
        return doc.RootElement.GetProperty("cases").EnumerateArray().Select(c => new Case(
            c.GetProperty("text").GetString()!,
            c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
            c.GetProperty("padded77").EnumerateArray().Select(e => e.GetInt32()).ToArray())).ToList();
    }

    [Test]
    public void SpecialTokensAndLimits()
    {
        Assert.That(Sd15.Value.BosTokenId, Is.EqualTo(49406));
        Assert.That(Sd15.Value.EosTokenId, Is.EqualTo(49407));
        Assert.That(Sd15.Value.PadTokenId, Is.EqualTo(49407));
        Assert.That(Sd15.Value.MaxLength, Is.EqualTo(77));
        Assert.That(Sd15.Value.VocabularySize, Is.EqualTo(49408));
        Assert.That(Sd2v.Value.PadTokenId, Is.EqualTo(0));
        Assert.That(Sd2v.Value.PadToken, Is.EqualTo("!"));
        Assert.That(Sd2v.Value.MaxLength, Is.EqualTo(77));
    }

    [Test]
    public void AllReferenceCasesMatchExactly()
    {
        var cases = Cases();
        Assert.That(cases, Has.Count.EqualTo(80));
        var tok = Sd15.Value;
        Assert.Multiple(() =>
        {
            foreach (var c in cases)
            {
                Assert.That(tok.Encode(c.Text), Is.EqualTo(c.Ids), $"ids of {JsonSerializer.Serialize(c.Text)}");
                var padded = tok.EncodePadded(c.Text);
                Assert.That(padded.Ids, Is.EqualTo(c.Padded), $"padded ids of {JsonSerializer.Serialize(c.Text)}");
                Assert.That(padded.Truncated, Is.EqualTo(c.Ids.Length > 77), $"truncation flag of {JsonSerializer.Serialize(c.Text)}");
                Assert.That(padded.DroppedIds, Is.EqualTo(c.Ids.Length > 77 ? c.Ids[76..^1] : Array.Empty<int>()));
            }
        });
    }

    [Test]
    public void TokenizerJsonGivesTheSameIdsForTextWithoutItsPadCharacter()
    {
        // The SD 2.x tokenizer registers its pad token '!' as a special token, which the reference cuts out of the raw
        // text, so only prompts without '!' encode the same as SD 1.x.
        Assert.Multiple(() =>
        {
            foreach (var c in Cases().Where(c => !c.Text.Contains('!')))
                Assert.That(Sd2v.Value.Encode(c.Text), Is.EqualTo(c.Ids), $"ids of {JsonSerializer.Serialize(c.Text)}");
        });
        Assert.That(Sd2v.Value.Encode("wow!"), Is.EqualTo(new[] { 49406, Sd15.Value.Encode("wow")[1], 0, 49407 }));
    }

    [TestCase("sd15")]
    [TestCase("sd2v")]
    public void PaddedIdsMatchTheTextEncoderFixture(string variant)
    {
        var tok = variant == "sd15" ? Sd15.Value : Sd2v.Value;
        var prompts = TextFixtures.Prompts(variant);
        using var expected = Fixtures.Expected($"{variant}/text/input_ids");
        Assert.That(expected.shape, Is.EqualTo(new long[] { prompts.Length, 77 }));
        for (int i = 0; i < prompts.Length; i++)
        {
            long[] row = expected[i].data<long>().ToArray();
            Assert.That(tok.EncodePadded(prompts[i]).Ids.Select(x => (long)x), Is.EqualTo(row), $"prompt {i}: {prompts[i]}");
        }
    }

    [Test]
    public void TruncationKeepsTheEndTokenAndReportsTheDroppedText()
    {
        string text = string.Join(" ", Enumerable.Range(0, 80).Select(i => "cat")) + " and a final dog";
        var r = Sd15.Value.EncodePadded(text);
        Assert.That(r.Ids, Has.Length.EqualTo(77));
        Assert.That(r.Ids[^1], Is.EqualTo(49407));
        Assert.That(r.Truncated, Is.True);
        Assert.That(r.DroppedText, Is.EqualTo("cat cat cat cat cat and a final dog"));
        var shortOne = Sd2v.Value.EncodePadded("a cat", 10);
        Assert.That(shortOne.Ids, Is.EqualTo(new[] { 49406, 320, 2368, 49407, 0, 0, 0, 0, 0, 0 }));
        Assert.That(shortOne.Truncated, Is.False);
        Assert.That(shortOne.DroppedText, Is.Empty);
    }

    [Test]
    public void DecodeRoundTripsNormalisedText()
    {
        var tok = Sd15.Value;
        Assert.That(tok.Decode(tok.Encode("A Café,  naïve 🙂 über!")), Is.EqualTo("a café , naïve 🙂 über !"));
    }

    [Test]
    public void MissingFilesNameTheFolderAndTheFiles()
    {
        string dir = Directory.CreateTempSubdirectory("ld-tok-").FullName;
        try
        {
            var e = Assert.Throws<FileNotFoundException>(() => ClipTokenizer.FromDirectory(dir))!;
            Assert.That(e.Message, Does.Contain(dir).And.Contain("vocab.json and merges.txt").And.Contain("tokenizer.json"));

            File.Copy(Path.Combine(GeneratedModel.Folder, "tokenizer", "vocab.json"), Path.Combine(dir, "vocab.json"));
            e = Assert.Throws<FileNotFoundException>(() => ClipTokenizer.FromDirectory(dir))!;
            Assert.That(e.Message, Does.Contain(dir).And.Contain("missing merges.txt"));
            Assert.That(e.FileName, Is.EqualTo(Path.Combine(dir, "merges.txt")));

            File.Delete(Path.Combine(dir, "vocab.json"));
            File.Copy(Path.Combine(GeneratedModel.Folder, "tokenizer", "merges.txt"), Path.Combine(dir, "merges.txt"));
            e = Assert.Throws<FileNotFoundException>(() => ClipTokenizer.FromDirectory(dir))!;
            Assert.That(e.Message, Does.Contain("missing vocab.json"));

            string nowhere = Path.Combine(dir, "nope");
            e = Assert.Throws<FileNotFoundException>(() => ClipTokenizer.FromDirectory(nowhere))!;
            Assert.That(e.Message, Does.Contain(nowhere));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void BadFilesAreRefusedWithTheirNames()
    {
        string dir = Directory.CreateTempSubdirectory("ld-tok-").FullName;
        try
        {
            File.Copy(Path.Combine(GeneratedModel.Folder, "tokenizer", "vocab.json"), Path.Combine(dir, "vocab.json"));
            File.WriteAllText(Path.Combine(dir, "merges.txt"), "#version: 0.2\ni n\nthis is wrong\n");
            var e = Assert.Throws<InvalidDataException>(() => ClipTokenizer.FromDirectory(dir))!;
            Assert.That(e.Message, Does.Contain("merges.txt").And.Contain("line 3"));

            File.WriteAllText(Path.Combine(dir, "merges.txt"), "#version: 0.2\ni n\n");
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), "{\"pad_token\": \"<|not-a-token|>\"}");
            e = Assert.Throws<InvalidDataException>(() => ClipTokenizer.FromDirectory(dir))!;
            Assert.That(e.Message, Does.Contain("pad").And.Contain("<|not-a-token|>"));

            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), "{");
            e = Assert.Throws<InvalidDataException>(() => ClipTokenizer.FromDirectory(dir))!;
            Assert.That(e.Message, Does.Contain("tokenizer_config.json"));

            File.Delete(Path.Combine(dir, "tokenizer_config.json"));
            File.WriteAllText(Path.Combine(dir, "tokenizer.json"), "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}");
            var ns = Assert.Throws<NotSupportedException>(() => ClipTokenizer.FromDirectory(dir))!;
            Assert.That(ns.Message, Does.Contain("tokenizer.json").And.Contain("WordPiece"));
        }
        finally { Directory.Delete(dir, true); }
    }
}
