using System.CommandLine;

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
        root.Subcommands.Add(PullCommand.Create(stdout, stderr));

        ParseResult parse;
        try
        {
            parse = root.Parse(args);
        }
        catch (Exception e)
        {
            stderr.WriteLine($"error: {ErrorMessage.Describe(e)}");
            return 2;
        }
        if (parse.Errors.Count > 0)
        {
            stderr.WriteLine($"error: {ErrorMessage.DescribeParseErrors(parse.Errors.Select(e => e.Message))} (see ldm --help).");
            return 2;
        }
        using var cts = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cts.Cancel(); };
        Console.CancelKeyPress += onCancel;
        try
        {
            return await parse.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false, Output = stdout, Error = stderr }, cts.Token);
        }
        catch (Exception e) when (ErrorMessage.Unwrap(e) is OperationCanceledException)
        {
            stderr.WriteLine("cancelled");
            return 130;
        }
        catch (Exception e)
        {
            // Every failure, expected or not, is one line; --verbose adds the whole exception.
            stderr.WriteLine($"error: {ErrorMessage.Describe(e)}");
            if (parse.GetValue(verbose)) stderr.WriteLine(e);
            return 1;
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }
}
