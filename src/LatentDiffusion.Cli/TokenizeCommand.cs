using System.CommandLine;
using LatentDiffusion.Loading.SingleFile;
using LatentDiffusion.Text;

namespace LatentDiffusion.Cli;

/// <summary><c>ldm tokenize --model PATH TEXT</c>: token ids as one JSON array line.</summary>
internal static class TokenizeCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string?>("--model", "-m") { Description = "A diffusers folder or a single-file checkpoint; default: the built-in shapes model." };
        var config = new Option<string?>("--config") { Description = "For single files: a diffusers folder that provides the tokenizer." };
        var tokenizerDir = new Option<string?>("--tokenizer") { Description = "For single files: a tokenizer folder; default: the CLIP tokenizer from the Hugging Face cache, downloaded once." };
        var text = new Argument<string>("text") { Description = "The text to tokenize." };
        var command = new Command("tokenize", "Print the token ids of a text (start and end tokens included, unpadded) as a JSON array.") { model, config, tokenizerDir, text };
        command.SetAction(async (parse, ct) =>
        {
            string path = BuiltInModel.Resolve(parse.GetValue(model));
            // As generate does: the config folder's tokenizer/ when it has one, else the hub cache (or one download).
            string? folder = parse.GetValue(tokenizerDir)
                ?? (parse.GetValue(config) is { } c && Directory.Exists(Path.Combine(c, "tokenizer")) ? Path.Combine(c, "tokenizer") : null);
            ClipTokenizer tokenizer;
            if (File.Exists(path) && !Directory.Exists(path))
            {
                TextEncoderLayout layout;
                using (var checkpoint = LdmCheckpoint.Open(path)) layout = checkpoint.TextEncoderLayout;
                tokenizer = await SingleFileTokenizer.LoadAsync(path, layout, folder, cancellationToken: ct);
            }
            else tokenizer = ClipTokenizer.ForModel(path);
            stdout.WriteLine("[" + string.Join(",", tokenizer.Encode(parse.GetValue(text) ?? "")) + "]");
            return 0;
        });
        return command;
    }
}
