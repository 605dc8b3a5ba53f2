using System.CommandLine;
using LatentDiffusion.Runtime;
using SixLabors.ImageSharp;

namespace LatentDiffusion.Cli;

/// <summary>The <c>ldm</c> command line: parsing, and one-line errors for bad input.</summary>
public static class LdmCommand
{
    /// <summary>Runs the tool; returns the process exit code.</summary>
    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr)
    {
        var verbose = new Option<bool>("--verbose", "-v") { Description = "Log progress details, and print stack traces on errors.", Recursive = true };
        var root = new RootCommand("ldm: Stable Diffusion in .NET (TorchSharp).");
        root.Options.Add(verbose);
        root.Subcommands.Add(GenerateCommand.Create(verbose, stdout, stderr));
        root.Subcommands.Add(TokenizeCommand.Create(stdout));
        root.Subcommands.Add(InfoCommand.Create(stdout));

        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var e in parse.Errors) stderr.WriteLine($"error: {e.Message}");
            return 2;
        }
        using var cts = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cts.Cancel(); };
        Console.CancelKeyPress += onCancel;
        try
        {
            return await parse.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false, Output = stdout, Error = stderr }, cts.Token);
        }
        catch (OperationCanceledException)
        {
            stderr.WriteLine("cancelled");
            return 130;
        }
        catch (Exception e) when (IsUserError(e))
        {
            stderr.WriteLine($"error: {e.Message.ReplaceLineEndings(" ")}");
            if (parse.GetValue(verbose)) stderr.WriteLine(e);
            return 1;
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    private static bool IsUserError(Exception e) => e is ArgumentException or FileNotFoundException or DirectoryNotFoundException
        or InvalidDataException or NotSupportedException or TorchRuntimeException or UnknownImageFormatException or IOException
        or UnauthorizedAccessException or KeyNotFoundException;
}
