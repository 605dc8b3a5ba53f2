using System.CommandLine;
using LatentDiffusion.Pipelines;

namespace LatentDiffusion.Cli;

/// <summary><c>ldm generate</c>'s prompt options: textual-inversion embeddings, the prompt syntax and truncation.</summary>
internal sealed class PromptArguments
{
    private readonly Option<string[]> _embedding = new("--embedding")
    {
        Description = "A textual-inversion embedding, FILE[:TOKEN] (repeatable): a .safetensors file (diffusers or AUTOMATIC1111 form; on SDXL, one with clip_l and clip_g) or a folder with learned_embeds.safetensors; TOKEN defaults to the file's own token or its file name. Use the token in --prompt or --negative-prompt.",
        AllowMultipleArgumentsPerToken = false,
    };

    private readonly Option<string> _syntax = new("--prompt-syntax")
    {
        Description = "a1111: (word:1.3), (word), [word], BREAK, \\( for a literal parenthesis; none: the prompt is plain text.",
        DefaultValueFactory = _ => "a1111",
    };

    private readonly Option<bool> _truncate = new("--truncate-prompt") { Description = "Cut prompts after 75 tokens as the reference pipeline does, instead of encoding them in 75-token chunks." };

    /// <summary>Adds the options to <paramref name="command"/>.</summary>
    public void AddTo(Command command)
    {
        command.Options.Add(_embedding);
        command.Options.Add(_syntax);
        command.Options.Add(_truncate);
    }

    /// <summary>The embeddings to load, (path, token or null), each path checked to exist.</summary>
    /// <exception cref="ArgumentException">An embedding is not there, or its token is empty.</exception>
    public List<(string Path, string? Token)> Embeddings(ParseResult parse)
    {
        var result = new List<(string, string?)>();
        foreach (string value in parse.GetValue(_embedding) ?? [])
        {
            var (path, token) = Split(value);
            if (!File.Exists(path) && !Directory.Exists(path))
                throw new ArgumentException($"--embedding {value}: '{path}' does not exist.");
            result.Add((path, token));
        }
        return result;
    }

    /// <summary>FILE or FILE:TOKEN; a value that names an existing file as a whole (a Windows drive letter, a colon in the name) has no token.</summary>
    internal static (string Path, string? Token) Split(string value)
    {
        if (File.Exists(value) || Directory.Exists(value)) return (value, null);
        int colon = value.LastIndexOf(':');
        if (colon <= 0 || colon == value.Length - 1) return (value, null);
        string token = value[(colon + 1)..];
        if (token.Contains('/') || token.Contains('\\')) return (value, null);
        return (value[..colon], token);
    }

    /// <summary>The prompt options into <paramref name="options"/>.</summary>
    /// <exception cref="ArgumentException">An unknown --prompt-syntax.</exception>
    public GenerationOptions Apply(ParseResult parse, GenerationOptions options)
    {
        var syntax = parse.GetValue(_syntax)!.ToLowerInvariant() switch
        {
            "a1111" or "auto1111" or "automatic1111" => PromptSyntax.A1111,
            "none" or "plain" => PromptSyntax.None,
            var other => throw new ArgumentException($"--prompt-syntax must be a1111 or none, got '{other}'."),
        };
        return options with { PromptSyntax = syntax, TruncateLongPrompts = parse.GetValue(_truncate) };
    }
}
