using System.CommandLine;
using LatentDiffusion.Loading;

namespace LatentDiffusion.Cli;

/// <summary><c>ldm info --model PATH</c>: what a model is, read from its headers and configs (no weights loaded).</summary>
internal static class InfoCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string?>("--model", "-m") { Description = "A diffusers folder or a single-file .safetensors checkpoint; default: the built-in shapes model." };
        var config = new Option<string?>("--config") { Description = "For single files: a diffusers folder whose configs to use." };
        var command = new Command("info", "Describe a model: format, architecture, dtypes, parameter counts, scheduler.") { model, config };
        command.SetAction(parse =>
        {
            foreach (var line in ModelInfo.Describe(BuiltInModel.Resolve(parse.GetValue(model)), parse.GetValue(config)).Lines()) stdout.WriteLine(line);
            return 0;
        });
        return command;
    }
}
