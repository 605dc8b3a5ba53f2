using LatentDiffusion.Cli;

return await LdmCommand.RunAsync(args, Console.Out, Console.Error);
