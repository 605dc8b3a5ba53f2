using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace LatentDiffusion.Pipelines;

/// <summary>A piece of a parsed prompt: text with its attention weight, or a <c>BREAK</c> (a chunk boundary).</summary>
/// <param name="Text">The text (empty for a break).</param>
/// <param name="Weight">The factor its tokens' hidden states are multiplied by (1 for a break).</param>
/// <param name="IsBreak">True for <c>BREAK</c>.</param>
internal readonly record struct PromptFragment(string Text, double Weight, bool IsBreak = false)
{
    public static PromptFragment Break => new("", 1.0, true);

    public override string ToString() => IsBreak ? "BREAK" : $"['{Text}', {Weight.ToString("R", CultureInfo.InvariantCulture)}]";
}

/// <summary>
/// AUTOMATIC1111's attention syntax (its <c>parse_prompt_attention</c>): the prompt to a list of (text, weight) pieces.
/// Round brackets multiply what they enclose by 1.1, square brackets divide by 1.1, <c>(text:w)</c> multiplies by w;
/// a bracket left open applies to the rest of the prompt, a closing bracket without an opening one stays as text; a
/// backslash makes the next bracket or backslash literal; <c>BREAK</c> (a whole word) ends the chunk. Neighbouring
/// pieces of equal weight are merged. Weights are doubles multiplied in the order A1111 multiplies them, so they equal
/// its values bit for bit.
/// </summary>
internal static class PromptAttentionParser
{
    private const double RoundBracketMultiplier = 1.1;
    private const double SquareBracketMultiplier = 1 / 1.1;

    // The alternatives of A1111's re_attention in its order. Digits are ASCII here (Python's \d also takes other
    // scripts' digits, which .NET's invariant number parsing does not).
    private static readonly Regex Attention = new(
        @"\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.0-9]+)\s*\)|\)|]|[^\\()\[\]:]+|:", RegexOptions.CultureInvariant);

    private static readonly Regex BreakWord = new(@"\s*\bBREAK\b\s*", RegexOptions.CultureInvariant | RegexOptions.Singleline);

    /// <summary>The pieces of <paramref name="text"/>; a text without syntax is one piece of weight 1.</summary>
    /// <exception cref="ArgumentException">A <c>(text:w)</c> weight is not a finite number (such as <c>1.2.3</c>).</exception>
    public static List<PromptFragment> Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var pieces = new List<(StringBuilder Text, double Weight, bool IsBreak)>();
        var round = new Stack<int>();
        var square = new Stack<int>();

        void MultiplyFrom(int start, double factor)
        {
            for (int p = start; p < pieces.Count; p++)
                if (!pieces[p].IsBreak) pieces[p] = (pieces[p].Text, pieces[p].Weight * factor, false);
        }

        foreach (Match m in Attention.Matches(text))
        {
            string token = m.Value;
            var weight = m.Groups[1];
            if (token.StartsWith('\\')) pieces.Add((new StringBuilder(token[1..]), 1.0, false));
            else if (token == "(") round.Push(pieces.Count);
            else if (token == "[") square.Push(pieces.Count);
            else if (weight.Success && round.Count > 0) MultiplyFrom(round.Pop(), ParseWeight(weight.Value, m.Index, text));
            else if (token == ")" && round.Count > 0) MultiplyFrom(round.Pop(), RoundBracketMultiplier);
            else if (token == "]" && square.Count > 0) MultiplyFrom(square.Pop(), SquareBracketMultiplier);
            else
            {
                var parts = BreakWord.Split(token);
                for (int i = 0; i < parts.Length; i++)
                {
                    if (i > 0) pieces.Add((new StringBuilder(), 1.0, true));
                    pieces.Add((new StringBuilder(parts[i]), 1.0, false));
                }
            }
        }
        // Brackets left open apply to everything after them, in the order they were opened (A1111's list order).
        foreach (int start in round.Reverse()) MultiplyFrom(start, RoundBracketMultiplier);
        foreach (int start in square.Reverse()) MultiplyFrom(start, SquareBracketMultiplier);

        if (pieces.Count == 0) return [new PromptFragment("", 1.0)];
        // Merge runs of equal weight (a break is never merged).
        var merged = new List<(StringBuilder Text, double Weight, bool IsBreak)> { pieces[0] };
        for (int i = 1; i < pieces.Count; i++)
        {
            var last = merged[^1];
            if (!last.IsBreak && !pieces[i].IsBreak && last.Weight == pieces[i].Weight) last.Text.Append(pieces[i].Text);
            else merged.Add(pieces[i]);
        }
        return merged.Select(p => p.IsBreak ? PromptFragment.Break : new PromptFragment(p.Text.ToString(), p.Weight)).ToList();
    }

    private static double ParseWeight(string value, int at, string text)
    {
        if (!double.TryParse(value, NumberStyles.AllowLeadingSign | NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double w) || !double.IsFinite(w))
            throw new ArgumentException($"The prompt's weight '{value}' at character {at + 1} is not a number (AUTOMATIC1111 syntax '(text:1.3)'; write \\( and \\) for literal parentheses, or set PromptSyntax to None).", "prompt");
        return w;
    }
}
