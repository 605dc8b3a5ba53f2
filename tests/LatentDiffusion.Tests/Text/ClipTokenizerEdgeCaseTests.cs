using System.Text.Json;
using LatentDiffusion.Text;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Text;

/// <summary>
/// Edge cases the fixtures do not cover, on a synthetic byte-level vocabulary (the 256 byte characters, then the same
/// with <c>&lt;/w&gt;</c>, then "wo", "wow&lt;/w&gt;", "!!", "!!!&lt;/w&gt;", start, end). The expected ids were produced by
/// the reference (transformers 5.17.0, tokenizers 0.23.2) from the same vocabulary and merges, through
/// <c>CLIPTokenizer(vocab, merges, pad_token=...)</c> and again after save_pretrained/from_pretrained (tokenizer.json).
/// </summary>
public class ClipTokenizerEdgeCaseTests
{
    private static readonly string[] Texts = ["wow!", "wow!!!", "!!!", "a ! b", "<|STARTOFTEXT|>x", "!<|startoftext|>!", "\u0130", "a\U0001D400b"];

    private static string MakeVocabulary()
    {
        string dir = Directory.CreateTempSubdirectory("ld-tok-edge-").FullName;
        var printable = Enumerable.Range(33, 94).Concat(Enumerable.Range(161, 12)).Concat(Enumerable.Range(174, 82)).ToList();
        var chars = printable.Select(b => (char)b).ToList();
        int next = 256;
        for (int b = 0; b < 256; b++) if (!printable.Contains(b)) chars.Add((char)next++);
        var vocab = new Dictionary<string, int>();
        foreach (var c in chars) vocab[c.ToString()] = vocab.Count;
        foreach (var c in chars) vocab[c + "</w>"] = vocab.Count;
        foreach (var t in new[] { "wo", "wow</w>", "!!", "!!!</w>", "<|startoftext|>", "<|endoftext|>" }) vocab[t] = vocab.Count;
        File.WriteAllText(Path.Combine(dir, "vocab.json"), JsonSerializer.Serialize(vocab));
        File.WriteAllText(Path.Combine(dir, "merges.txt"), "#version: 0.2\nw o\nwo w</w>\n! !\n!! !</w>\n");
        return dir;
    }

    [Test]
    public void PadTokenExclamationIsCutOutOfTheText()
    {
        string dir = MakeVocabulary();
        try
        {
            var tok = ClipTokenizer.FromVocabAndMerges(Path.Combine(dir, "vocab.json"), Path.Combine(dir, "merges.txt"), padToken: "!");
            int[][] expected =
            [
                [516, 513, 0, 517], [516, 513, 0, 0, 0, 517], [516, 0, 0, 0, 517], [516, 320, 0, 321, 517],
                [516, 27, 347, 82, 83, 64, 81, 83, 78, 69, 83, 68, 87, 339, 91, 285, 343, 517], [516, 0, 516, 0, 517],
                [516, 328, 136, 485, 517], [516, 64, 172, 251, 238, 222, 321, 517],
            ];
            for (int i = 0; i < Texts.Length; i++) Assert.That(tok.Encode(Texts[i]), Is.EqualTo(expected[i]), JsonSerializer.Serialize(Texts[i]));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void WithTheDefaultPadExclamationIsAnOrdinaryCharacter()
    {
        string dir = MakeVocabulary();
        try
        {
            var tok = ClipTokenizer.FromVocabAndMerges(Path.Combine(dir, "vocab.json"), Path.Combine(dir, "merges.txt"));
            int[][] expected =
            [
                [516, 513, 256, 517], [516, 513, 515, 517], [516, 515, 517], [516, 320, 256, 321, 517],
                [516, 27, 347, 82, 83, 64, 81, 83, 78, 69, 83, 68, 87, 339, 91, 285, 343, 517], [516, 256, 516, 256, 517],
                [516, 328, 136, 485, 517], [516, 64, 172, 251, 238, 222, 321, 517],
            ];
            for (int i = 0; i < Texts.Length; i++) Assert.That(tok.Encode(Texts[i]), Is.EqualTo(expected[i]), JsonSerializer.Serialize(Texts[i]));
        }
        finally { Directory.Delete(dir, true); }
    }
}
