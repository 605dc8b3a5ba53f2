using LatentDiffusion.Text;
using LatentDiffusion.Shapes;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Shapes;

public sealed class ShapesVocabularyTests
{
    private string _dir = "";
    private ClipTokenizer _tokenizer = null!;

    [OneTimeSetUp]
    public void WriteVocabulary()
    {
        _dir = Path.Combine(Path.GetTempPath(), "ld-shapes-vocab-" + Guid.NewGuid().ToString("N"));
        ShapesVocabulary.Write(_dir);
        _tokenizer = ClipTokenizer.FromDirectory(_dir);
    }

    [OneTimeTearDown]
    public void Remove() => Directory.Delete(_dir, recursive: true);

    [Test]
    public void FolderHasTheClassicFiles()
    {
        foreach (var f in new[] { "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json" })
            Assert.That(File.Exists(Path.Combine(_dir, f)), f);
        Assert.That(_tokenizer.MaxLength, Is.EqualTo(16));
        Assert.That(_tokenizer.PadTokenId, Is.EqualTo(_tokenizer.EosTokenId));
        Assert.That(_tokenizer.VocabularySize, Is.LessThan(1000));
    }

    [Test]
    public void EveryWordIsOneToken()
    {
        foreach (var word in ShapesVocabulary.Words)
        {
            var ids = _tokenizer.Encode(word);
            Assert.That(ids, Has.Length.EqualTo(3), word);
            Assert.That(_tokenizer.Decode(ids), Is.EqualTo(word));
        }
        Assert.That(_tokenizer.Encode(","), Has.Length.EqualTo(3));
    }

    [Test]
    public void CaptionsRoundTripInOneTokenPerWord()
    {
        var captions = Enumerable.Range(0, 500).Select(i => ShapesDataset.Sample(11, i).Caption)
            .Concat(ShapesDataset.EvaluationCases.Select(c => c.Prompt));
        foreach (var caption in captions)
        {
            var ids = _tokenizer.Encode(caption);
            Assert.That(ids.Length, Is.LessThanOrEqualTo(ShapesVocabulary.MaxLength), caption);
            Assert.That(ids.Length - 2, Is.EqualTo(caption.Replace(",", " ,").Split(' ', StringSplitOptions.RemoveEmptyEntries).Length), caption);
            // Decoding puts a space before the comma, as CLIP's decoder does without clean-up.
            Assert.That(_tokenizer.Decode(ids).Replace(" ,", ","), Is.EqualTo(caption));
        }
    }

    [Test]
    public void ReadmePromptIsNineTokens()
    {
        var ids = _tokenizer.Encode("a red circle on a blue background");
        Assert.That(ids, Has.Length.EqualTo(9));
        Assert.That(ids[0], Is.EqualTo(_tokenizer.BosTokenId));
        Assert.That(ids[^1], Is.EqualTo(_tokenizer.EosTokenId));
    }

    [Test]
    public void AnyTextStillTokenizes()
    {
        foreach (var text in new[] { "A Zebra-striped HEXAGON, 42 times!", "crimson dodecahedron", "café ünïcode ✓" })
        {
            var ids = _tokenizer.Encode(text);
            Assert.That(ids.Length, Is.GreaterThan(2), text);
            Assert.That(ids.Skip(1).SkipLast(1), Has.None.EqualTo(_tokenizer.EosTokenId), text);
        }
        Assert.That(_tokenizer.Decode(_tokenizer.Encode("crimson dodecahedron")), Is.EqualTo("crimson dodecahedron"));
        var padded = _tokenizer.EncodePadded("a small red circle on the left on a blue background with a large green square and more", 16);
        Assert.That(padded.Ids, Has.Length.EqualTo(16));
        Assert.That(padded.DroppedText, Is.Not.Empty);
    }

    [Test]
    public void WriteIsDeterministic()
    {
        string other = Path.Combine(Path.GetTempPath(), "ld-shapes-vocab-" + Guid.NewGuid().ToString("N"));
        try
        {
            ShapesVocabulary.Write(other);
            foreach (var f in new[] { "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json" })
                Assert.That(File.ReadAllBytes(Path.Combine(other, f)), Is.EqualTo(File.ReadAllBytes(Path.Combine(_dir, f))), f);
        }
        finally { Directory.Delete(other, true); }
    }
}
