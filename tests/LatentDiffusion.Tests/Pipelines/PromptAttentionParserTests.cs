using LatentDiffusion.Pipelines;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary>
/// AUTOMATIC1111's attention syntax: the input → output pairs its <c>parse_prompt_attention</c> docstring documents, with
/// the weights compared bit for bit (they are the doubles Python prints), and the parts it leaves undocumented.
/// </summary>
public class PromptAttentionParserTests
{
    private static (string, double)[] Pairs(string text) =>
        PromptAttentionParser.Parse(text).Select(f => f.IsBreak ? ("BREAK", -1.0) : (f.Text, f.Weight)).ToArray();

    [Test]
    public void NormalText() => Assert.That(Pairs("normal text"), Is.EqualTo(new[] { ("normal text", 1.0) }));

    [Test]
    public void AnImportantWord() =>
        Assert.That(Pairs("an (important) word"), Is.EqualTo(new[] { ("an ", 1.0), ("important", 1.1), (" word", 1.0) }));

    [Test]
    public void AnUnbalancedBracketWeighsTheRest() => Assert.That(Pairs("(unbalanced"), Is.EqualTo(new[] { ("unbalanced", 1.1) }));

    [Test]
    public void EscapedBracketsAreLiteral() => Assert.That(Pairs(@"\(literal\]"), Is.EqualTo(new[] { ("(literal]", 1.0) }));

    [Test]
    public void NeighboursOfEqualWeightMerge() => Assert.That(Pairs("(unnecessary)(parens)"), Is.EqualTo(new[] { ("unnecessaryparens", 1.1) }));

    [Test]
    public void TheDocstringsLongExampleBitForBit()
    {
        Assert.That(Pairs("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."), Is.EqualTo(new[]
        {
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        }));
    }

    [Test]
    public void NestingMultipliesAndSquareBracketsDivide()
    {
        Assert.That(Pairs("((word))"), Is.EqualTo(new[] { ("word", 1.1 * 1.1) }));
        Assert.That(Pairs("[word]"), Is.EqualTo(new[] { ("word", 1 / 1.1) }));
        Assert.That(Pairs("a (word:1.3) b"), Is.EqualTo(new[] { ("a ", 1.0), ("word", 1.3), (" b", 1.0) }));
        Assert.That(Pairs("(word: 0.5 )"), Is.EqualTo(new[] { ("word", 0.5) }), "white space around the number is allowed");
        Assert.That(Pairs("(word:-1)"), Is.EqualTo(new[] { ("word", -1.0) }), "negative weights are taken as given");
    }

    [Test]
    public void ColonsAndStrayClosingBracketsStayText()
    {
        Assert.That(Pairs("time: 10:30"), Is.EqualTo(new[] { ("time: 10:30", 1.0) }));
        Assert.That(Pairs("a) b]"), Is.EqualTo(new[] { ("a) b]", 1.0) }));
        Assert.That(Pairs("word:1.3)"), Is.EqualTo(new[] { ("word:1.3)", 1.0) }), "a weight without an open bracket is text");
        Assert.That(Pairs(@"a \\ b"), Is.EqualTo(new[] { (@"a \ b", 1.0) }));
    }

    [Test]
    public void BreakEndsAChunkAndTakesItsSurroundingSpace()
    {
        Assert.That(Pairs("a cat BREAK a dog"), Is.EqualTo(new[] { ("a cat", 1.0), ("BREAK", -1.0), ("a dog", 1.0) }));
        Assert.That(Pairs("BREAKFAST"), Is.EqualTo(new[] { ("BREAKFAST", 1.0) }), "only the whole word");
        Assert.That(Pairs("a break b"), Is.EqualTo(new[] { ("a break b", 1.0) }), "only in capitals");
        Assert.That(Pairs("(red) BREAK (blue)"), Is.EqualTo(new[] { ("red", 1.1), ("", 1.0), ("BREAK", -1.0), ("", 1.0), ("blue", 1.1) }));
    }

    [Test]
    public void EmptyPromptIsOneEmptyPiece() => Assert.That(Pairs(""), Is.EqualTo(new[] { ("", 1.0) }));

    [TestCase("(word:1.2.3)")]
    [TestCase("(word:.)")]
    public void AWeightThatIsNotANumberIsAnError(string prompt)
    {
        var e = Assert.Throws<ArgumentException>(() => PromptAttentionParser.Parse(prompt));
        Assert.That(e!.Message, Does.Contain("is not a number").And.Contain("PromptSyntax"));
    }
}
