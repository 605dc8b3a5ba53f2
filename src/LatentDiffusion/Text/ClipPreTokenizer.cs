using System.Globalization;
using System.Text;

namespace LatentDiffusion.Text;

/// <summary>
/// Splits normalised text into the words that BPE then encodes one by one, as the reference does with CLIP's pattern
/// <c>&lt;|startoftext|&gt;|&lt;|endoftext|&gt;|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+</c> followed by
/// the byte-level pre-tokenizer's GPT-2 pattern.
/// </summary>
/// <remarks>
/// Written as a scanner over code points rather than a .NET regex because .NET classifies UTF-16 code units: a letter or
/// digit outside the Basic Multilingual Plane would not match <c>\p{L}</c> / <c>\p{N}</c> there, but does in the reference.
/// Alternatives are tried in the pattern's order at each position (an ordered alternation, not longest match). The only
/// piece the second (GPT-2) pattern changes is a literal <c>&lt;|startoftext|&gt;</c> or <c>&lt;|endoftext|&gt;</c> that
/// reached this stage as text, which it splits into <c>&lt;|</c>, the word, and <c>|&gt;</c>.
/// </remarks>
internal static class ClipPreTokenizer
{
    private static readonly string[] MarkerWords = ["startoftext", "endoftext"];
    private static readonly string[] Contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"];

    public static List<string> Split(string text)
    {
        var pieces = new List<string>();
        int i = 0;
        while (i < text.Length)
        {
            var rune = Rune.GetRuneAt(text, i);
            if (ClipNormalizer.IsWhiteSpace(rune)) { i += rune.Utf16SequenceLength; continue; }

            string? marker = MarkerWords.FirstOrDefault(w => Matches(text, i, "<|" + w + "|>"));
            if (marker is not null)
            {
                pieces.Add("<|"); pieces.Add(marker); pieces.Add("|>");
                i += marker.Length + 4;
                continue;
            }
            string? contraction = Contractions.FirstOrDefault(c => Matches(text, i, c));
            if (contraction is not null)
            {
                pieces.Add(contraction);
                i += contraction.Length;
                continue;
            }
            int start = i;
            if (IsLetter(rune))
            {
                while (i < text.Length && IsLetter(rune = Rune.GetRuneAt(text, i))) i += rune.Utf16SequenceLength;
            }
            else if (IsNumber(rune))
            {
                i += rune.Utf16SequenceLength;
            }
            else
            {
                while (i < text.Length && IsOther(rune = Rune.GetRuneAt(text, i))) i += rune.Utf16SequenceLength;
            }
            pieces.Add(text[start..i]);
        }
        return pieces;
    }

    private static bool Matches(string text, int at, string literal) => at + literal.Length <= text.Length && string.CompareOrdinal(text, at, literal, 0, literal.Length) == 0;

    private static bool IsLetter(Rune r) => Rune.GetUnicodeCategory(r) is UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter
        or UnicodeCategory.TitlecaseLetter or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter;

    private static bool IsNumber(Rune r) => Rune.GetUnicodeCategory(r) is UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber;

    private static bool IsOther(Rune r) => !ClipNormalizer.IsWhiteSpace(r) && !IsLetter(r) && !IsNumber(r);
}
