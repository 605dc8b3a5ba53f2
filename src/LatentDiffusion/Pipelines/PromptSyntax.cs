namespace LatentDiffusion.Pipelines;

/// <summary>How the prompt text is read (<see cref="GenerationOptions.PromptSyntax"/>).</summary>
public enum PromptSyntax
{
    /// <summary>
    /// Plain text, as the reference pipeline reads it: parentheses, brackets and <c>BREAK</c> are words like any other.
    /// </summary>
    None,

    /// <summary>
    /// AUTOMATIC1111's attention syntax: <c>(word)</c> weighs a word by 1.1, <c>((word))</c> by 1.1², <c>[word]</c> divides
    /// by 1.1, <c>(word:1.3)</c> sets the factor, <c>\(</c> <c>\)</c> <c>\[</c> <c>\]</c> <c>\\</c> are literal characters,
    /// and <c>BREAK</c> starts a new 75-token chunk. A prompt without any of these is read exactly as with
    /// <see cref="None"/>.
    /// </summary>
    A1111,
}
