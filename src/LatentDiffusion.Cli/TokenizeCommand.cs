using System.CommandLine;
using LatentDiffusion.Text;

namespace LatentDiffusion.Cli;

/// <summary><c>ldm tokenize --model PATH TEXT</c>: token ids as one JSON array line.</summary>
internal static class TokenizeCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string?>("--model", "-m") { Description = "A diffusers folder, or a single-file checkpoint with --config; default: the built-in shapes model." };
        var config = new Option<string?>("--config") { Description = "For single files: a diffusers folder that provides the tokenizer." };
        var text = new Argument<string>("text") { Description = "The text to tokenize." };
        var command = new Command("tokenize", "Print the token ids of a text (start and end tokens included, unpadded) as a JSON array.") { model, config, text };
        command.SetAction(parse =>
        {
            var tokenizer = ClipTokenizer.ForModel(BuiltInModel.Resolve(parse.GetValue(model)), parse.GetValue(config));
            stdout.WriteLine("[" + string.Join(",", tokenizer.Encode(parse.GetValue(text) ?? "")) + "]");
            return 0;
        });
        return command;
    }
}
